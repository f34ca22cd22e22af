"""A workload's standing evaluation set: labelled items kept across cycles.

A dataset version's eval split holds what one curation run held out; the
standing set keeps every labelled item it ever held out, so each cycle's gate
judges on more items than the last (a gain of 5 points needs hundreds of
paired items to be seen, not the thirty a split holds).

* **It grows** every time a dataset version is made (``grow_eval_set``): the
  version's eval-split examples with a label (a correction, a reviewed item, an
  answer users confirmed) join it, one item per question. A better label for a
  question already held (a correction over a confirmation; the same kind, newer)
  replaces the old item, which is retired.
* **It never trains.** The questions it holds (retired ones too) are held out of
  every later dataset's train and few-shot splits (``Store.eval_set_questions``,
  read by curation), so the knowledge index and few-shot pools, built from
  those splits, never see them.
* **Provenance** per item, most trusted first: ``correction``, ``review`` (a
  human decided its review item), ``confirmed`` (users reacted), ``simulated``
  (only a simulator reacted), ``outcome`` (no reaction: the task's own outcome).
* **Staleness**: an item whose label is older than ``max_age_days``, or whose
  tools' schemas changed since it was labelled, is held out of the gate until
  a human re-validates it (``validate_item``).
* **Versions**: each growth records the set's next version (items, added,
  retired, per stratum and provenance); an evaluation names the version it ran on.
* Each item is stratified by intent (the task's ``intent`` or ``category``
  metadata) and the tools its answer calls.

Answers are cached per (version, item) by the evaluation (``flywheel.evaluate``),
so a cycle pays only for new items and new versions.
"""

from __future__ import annotations

import hashlib
from collections import Counter
from datetime import UTC, datetime, timedelta
from typing import Any

import orjson

from flywheel.curate.pipeline import _example_from_row, _question_hash
from flywheel.records import utcnow
from flywheel.store import Store

__all__ = ["PROVENANCE_RANK", "grow_eval_set", "tools_fingerprint", "validate_item"]

#: How much a label is trusted: a better one replaces a worse one for the same question.
PROVENANCE_RANK = {"correction": 5, "review": 4, "confirmed": 3, "simulated": 2, "outcome": 1}


def tools_fingerprint(tools: Any, names: list[str]) -> str | None:
    """A hash of the schemas of the tools ``names`` as offered in ``tools``."""
    if not names:
        return None
    offered = {}
    for tool in tools or []:
        function = tool.get("function", tool) if isinstance(tool, dict) else None
        if isinstance(function, dict) and function.get("name") in names:
            offered[function["name"]] = function.get("parameters")
    blob = orjson.dumps(offered, option=orjson.OPT_SORT_KEYS | orjson.OPT_NON_STR_KEYS, default=str)
    return hashlib.sha256(blob).hexdigest()[:32]


def _tool_names(target: dict[str, Any]) -> list[str]:
    return sorted({str(c.get("name")) for c in target.get("tool_calls") or [] if isinstance(c, dict)})


def _aware(value: datetime) -> datetime:
    return value if value.tzinfo else value.replace(tzinfo=UTC)


def grow_eval_set(
    store: Store,
    workload: str,
    dataset_id: str,
    *,
    max_age_days: float | None = None,
    now: datetime | None = None,
) -> dict[str, Any]:
    """Add the dataset's labelled eval-split examples to the workload's standing
    set, retire the items they replace, mark stale ones, and record a version."""
    now = now or utcnow()
    rows = [r for r in store.dataset_examples(dataset_id, "eval") if r["kind"] == "sft"]
    every = store.dataset_examples(dataset_id)
    labels = store.label_sources([r["task_id"] for r in rows])
    existing = store.eval_set_items(workload, active_only=False)
    seen_ids = {item["id"] for item in existing}
    active = {item["question"]: item for item in existing if item["retired_at"] is None}

    # The tools as the latest traffic offers them: a changed schema makes an old label stale.
    current_tools: dict[str, Any] = {}
    for row in sorted(every, key=lambda r: r["task_at"]):
        for tool in row.get("tools") or []:
            function = tool.get("function", tool) if isinstance(tool, dict) else None
            if isinstance(function, dict) and function.get("name"):
                current_tools[function["name"]] = tool

    added: list[dict[str, Any]] = []
    retire: list[str] = []
    for row in rows:
        if row["id"] in seen_ids:
            continue
        example = _example_from_row(row)
        question = str(_question_hash(example))
        label = labels.get(row["task_id"], {})
        if row["source"] == "correction":
            provenance = "correction"
        elif label.get("reviewed"):
            provenance = "review"
        elif not label.get("feedback_sources"):
            provenance = "outcome"  # no human reaction: the task's own outcome labelled it
        elif all(str(source).startswith("simulat") for source in label["feedback_sources"]):
            provenance = "simulated"
        else:
            provenance = "confirmed"
        held = active.get(question)
        if held is not None:
            better = PROVENANCE_RANK[provenance] > PROVENANCE_RANK.get(held["provenance"], 0)
            newer = PROVENANCE_RANK[provenance] == PROVENANCE_RANK.get(held["provenance"], 0) and _aware(
                example.task_at
            ) > _aware(held["labelled_at"])
            if not (better or newer):
                continue
            retire.append(held["id"])
        names = _tool_names(row["target"])
        intent = str(label.get("intent") or "-")[:150]
        item = {
            "id": row["id"],
            "workload": workload,
            "question": question,
            "stratum": f"{intent}|{','.join(names) or '(text)'}"[:400],
            "provenance": provenance,
            "task_id": row["task_id"],
            "labelled_at": example.task_at,
            "added_at": now,
            "tools_fingerprint": tools_fingerprint(row.get("tools"), names),
            "stale": None,
            "validated_at": None,
            "retired_at": None,
        }
        added.append(item)
        active[question] = item

    stale: dict[str, str | None] = {}
    for item in active.values():
        if item in added:
            continue
        reason = _stale_reason(item, current_tools, max_age_days, now)
        if reason != item["stale"]:
            stale[item["id"]] = reason

    kept = list(active.values())
    strata = Counter(i["stratum"] for i in kept)
    summary = {
        "strata": dict(strata),
        "provenance": dict(Counter(i["provenance"] for i in kept)),
        "stale": sum(1 for i in kept if (stale.get(i["id"], i["stale"]) is not None)),
    }
    version = store.save_eval_set(
        workload, added=added, retire=retire, stale=stale, dataset_id=dataset_id, summary=summary, now=now
    )
    return {
        "version": version["number"],
        "items": version["items"],
        "added": len(added),
        "retired": len(retire),
        "stale": summary["stale"],
        "provenance": summary["provenance"],
        "strata": len(strata),
    }


def _stale_reason(
    item: dict[str, Any], current_tools: dict[str, Any], max_age_days: float | None, now: datetime
) -> str | None:
    fresh_since = _aware(item["validated_at"] or item["labelled_at"])
    if max_age_days is not None and now - fresh_since > timedelta(days=max_age_days):
        return f"label older than {max_age_days:g} days"
    names = [n for n in item["stratum"].split("|", 1)[-1].split(",") if n and n != "(text)"]
    if names and all(n in current_tools for n in names):
        now_fingerprint = tools_fingerprint([current_tools[n] for n in names], names)
        if item["tools_fingerprint"] and now_fingerprint != item["tools_fingerprint"]:
            return f"the schema of {', '.join(names)} changed since the label was made"
    return None


def validate_item(store: Store, item_id: str, *, now: datetime | None = None) -> dict[str, Any]:
    """A human re-confirms an item's label: fresh again, for its tools as offered now."""
    now = now or utcnow()
    rows = store.examples_by_id([item_id])
    row = rows.get(item_id)
    fingerprint = None
    if row is not None:
        latest = store.latest_dataset(row["workload"])
        names = _tool_names(row["target"])
        tools = row.get("tools")
        if latest is not None:
            for other in reversed(store.dataset_examples(latest["id"])):
                offered = {
                    (t.get("function", t) or {}).get("name")
                    for t in other.get("tools") or []
                    if isinstance(t, dict)
                }
                if set(names) <= offered:
                    tools = other["tools"]
                    break
        fingerprint = tools_fingerprint(tools, names)
    return store.validate_eval_item(item_id, tools_fingerprint=fingerprint, now=now)

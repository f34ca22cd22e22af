"""One curation run: tasks -> rules -> examples -> quality -> dedup -> staleness
-> splits -> an immutable dataset version, plus review items.

Incremental: a run after an earlier version processes only tasks ingested
since that version's cutoff, and tasks that got new feedback, corrections or
annotations since; everything else is carried over (and re-weighted for age).
"""

from __future__ import annotations

import hashlib
import logging
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from flywheel.curate.examples import (
    Example,
    assess,
    build_example,
    dedup_text,
    dominant,
    near_duplicate_clusters,
    normalized_question,
    preference_examples,
    split_of,
    stratified_ranks,
    weight,
)
from flywheel.curate.rules import RulesFile
from flywheel.curate.signals import facts, first_match
from flywheel.errors import InvalidInput
from flywheel.records import utcnow
from flywheel.store import Store

log = logging.getLogger(__name__)

__all__ = ["CurationResult", "curate"]

_DIMENSIONS = ("accuracy", "completeness", "relevance", "timeliness")


@dataclass
class CurationResult:
    dataset_id: str
    number: int
    workload: str
    summary: dict[str, Any] = field(default_factory=dict)


def _review_reason(example: Example | None, reason: str) -> str:
    return reason if example is None else f"{reason} ({example.question[:80]})"


def curate(
    store: Store,
    workload: str,
    rules: RulesFile,
    *,
    now: datetime | None = None,
    progress: Callable[[int], None] | None = None,
    judge_model: Any = None,
) -> CurationResult:
    """One curation run (see the module's docstring). ``judge_model`` overrides
    the rules file's judge endpoint (a ``ChatModel``)."""
    now = now or utcnow()
    previous = store.latest_dataset(workload)
    cutoff = now
    percentiles = store.latency_percentiles(workload)
    counts: Counter[str] = Counter()
    per_rule: Counter[str] = Counter()
    usable_per_rule: Counter[str] = Counter()
    handled: Counter[str] = Counter()  # tasks with missing pieces etc.
    candidates: list[Example] = []
    reviews: list[dict[str, Any]] = []
    reprocessed: set[str] = set()
    tool_counts: Counter[str] = Counter()
    processed = 0
    after = previous["cutoff"] if previous and previous["rules_hash"] == rules.hash else None
    for chunk in store.iter_tasks_detailed(workload, ingested_after=after, ingested_until=cutoff, lean=True):
        for task in chunk:
            processed += 1
            reprocessed.add(task.id)
            rule = first_match(rules.rules, facts(task, percentiles))
            if rule is None:
                counts["unmatched"] += 1
                continue
            per_rule[rule.name] += 1
            counts[rule.action] += 1
            if rule.action == "drop":
                continue
            example = None
            try:
                example = build_example(
                    task, "train_negative" if rule.action == "train_negative" else "train_positive", rule.name
                )
            except (KeyError, TypeError, ValueError) as exc:  # malformed logged content: count it, go on
                handled["malformed"] += 1
                log.debug("task %s: cannot build an example: %s", task.id, exc)
            if example is None:
                handled["no_llm_call_or_answer"] += 1
                if rule.action == "review":
                    reviews.append(
                        _review_item(task.id, workload, rule.name, f"rule {rule.name!r}", 0.5, now)
                    )
                continue
            example.quality = assess(example, rules, now)
            tool_counts.update(example.tools_used)
            if rule.action == "review":
                reviews.append(
                    _review_item(
                        task.id,
                        workload,
                        rule.name,
                        _review_reason(example, f"rule {rule.name!r}"),
                        0.0,
                        now,
                        example,
                    )
                )
                continue
            verdict = _quality_verdict(example, rules)
            if verdict == "drop":
                counts["low_quality"] += 1
                continue
            if verdict != "pass":
                reviews.append(
                    _review_item(
                        task.id, workload, rule.name, _review_reason(example, verdict), 0.0, now, example
                    )
                )
                counts["borderline"] += 1
                continue
            candidates.append(example)
            usable_per_rule[rule.name] += 1
            for pair in preference_examples(task, rule.name):
                pair.quality = assess(pair, rules, now)
                candidates.append(pair)
        if progress:
            progress(processed)
    if rules.judge is not None and candidates:
        candidates = _judge(store, rules, candidates, reviews, workload, now, counts, judge_model)
    if previous is None and processed == 0:
        raise InvalidInput(
            f"no finished tasks of workload {workload!r} to curate",
            hint="log some traffic first (flywheel simulate)",
        )

    # Carry over the previous version's examples whose tasks were not reprocessed.
    carried: list[Example] = []
    previous_split: dict[str, str] = {}
    if previous is not None:
        membership = store.dataset_membership(previous["id"])
        rows = store.examples_by_id(list(membership))
        for example_id, (split, _) in membership.items():
            row = rows.get(example_id)
            if row is None or row["task_id"] in reprocessed:
                continue
            example = _example_from_row(row)
            example.quality = assess(example, rules, now)
            carried.append(example)
            previous_split[row["session_id"]] = split
    pool = carried + candidates

    # Staleness: too old and not re-validated -> dropped.
    drop_after = rules.staleness.drop_after_days
    if drop_after is not None:
        fresh = [e for e in pool if (now - e.task_at).total_seconds() / 86400 <= drop_after]
        counts["stale_dropped"] = len(pool) - len(fresh)
        pool = fresh

    # Exact duplicates share an id; near-duplicates keep the corrected, then the freshest.
    by_id: dict[str, Example] = {}
    for example in pool:
        kept = by_id.get(example.id)
        if kept is None or (example.task_at, example.source == "correction") > (
            kept.task_at,
            kept.source == "correction",
        ):
            by_id[example.id] = example
    counts["exact_duplicates"] = len(pool) - len(by_id)
    pool = list(by_id.values())
    survivors = []
    texts = [dedup_text(e.question, e.target) for e in pool]
    for cluster in near_duplicate_clusters(texts, rules.dedup.near_threshold, rules.dedup.num_perm):
        members = [pool[i] for i in cluster]
        survivors.append(max(members, key=lambda e: (e.source == "correction", e.task_at)))
    counts["near_duplicates"] = len(pool) - len(survivors)
    pool = sorted(survivors, key=lambda e: (e.task_at, e.id))

    # Splits: by session (no session in two splits), stratified by workload and tool.
    members_of: dict[str, list[Example]] = {}
    for example in pool:
        members_of.setdefault(example.session_id, []).append(example)
    keys = sorted(members_of)
    strata = []
    for key in keys:
        tools = [tool for example in members_of[key] for tool in example.tools_used] or ["(none)"]
        strata.append(f"{members_of[key][0].workload}|{dominant(tools)}")
    # A tool stratum too small to hold every split joins its workload's pool of rare tools.
    smallest = min([f for f in (rules.splits.eval, rules.splits.few_shot) if f > 0] or [1.0])
    sizes = Counter(strata)
    strata = [s if sizes[s] * smallest >= 1 else s.split("|", 1)[0] + "|(rare tools)" for s in strata]
    ranks = stratified_ranks(keys, strata, rules.splits.seed)
    split_of_session = {
        key: previous_split.get(key) or split_of(ranks[key], rules)
        for key in keys  # eval stays eval
    }
    # The same question asked in another session must not train what eval measures.
    eval_questions = {
        normalized_question(e) for k in keys if split_of_session[k] == "eval" for e in members_of[k]
    }
    membership_rows = []
    split_counts: Counter[str] = Counter()
    kept_pool = []
    for key in keys:
        split = split_of_session[key]
        for example in members_of[key]:
            if split != "eval" and normalized_question(example) in eval_questions:
                counts["dropped_eval_overlap"] += 1
                continue
            kept_pool.append(example)
            split_counts[split] += 1
            membership_rows.append(
                {"example_id": example.id, "split": split, "weight": weight(example, rules)}
            )
    pool = kept_pool

    # Review queue: corrections-adjacent and rare tools first.
    for item in reviews:
        rarity = 1.0 / (1 + min((tool_counts[t] for t in item.pop("_tools", [])), default=0))
        item["priority"] = round(item["priority"] + rarity, 6)

    usable = len(membership_rows)
    summary = {
        "tasks_processed": processed,
        "carried_over": len(carried),
        "actions": dict(counts),
        "per_rule": dict(per_rule),
        "handled": dict(handled),
        "examples": usable,
        "splits": dict(split_counts),
        "sources": dict(Counter(e.source for e in pool)),
        "kinds": dict(Counter(e.kind for e in pool)),
        "review_items": len(reviews),
        "signal_density": {
            "overall": round(1000 * len(candidates) / processed, 2) if processed else None,
            "per_rule": {r: round(1000 * n / processed, 2) for r, n in usable_per_rule.items()}
            if processed
            else {},
        },
        "latency_percentiles_ms": percentiles,
    }
    number = (previous["number"] + 1) if previous else 1
    content = hashlib.sha256(
        (rules.hash + "".join(sorted(f"{m['example_id']}:{m['split']}" for m in membership_rows))).encode()
    ).hexdigest()[:16]
    dataset_id = f"ds-{workload[:40]}-{number}-{content}"
    # The survivors (an id names one content; the row must be the member that was kept).
    examples_rows = [_example_row(e, now) for e in pool]
    for row in membership_rows:
        row["dataset_id"] = dataset_id
    for item in reviews:
        item["dataset_id"] = dataset_id
    store.save_dataset(
        {
            "id": dataset_id,
            "workload": workload,
            "number": number,
            "parent_id": previous["id"] if previous else None,
            "rules": rules.source,
            "rules_hash": rules.hash,
            "summary": summary,
            "cutoff": cutoff,
            "created_at": now,
        },
        examples_rows,
        membership_rows,
        reviews,
    )
    return CurationResult(dataset_id, number, workload, summary)


def _judge(
    store: Store,
    rules: RulesFile,
    candidates: list[Example],
    reviews: list[dict[str, Any]],
    workload: str,
    now: datetime,
    counts: Counter[str],
    model: Any = None,
) -> list[Example]:
    from flywheel.curate.judge import Judge
    from flywheel.models.registry import load_model

    assert rules.judge is not None
    judge = Judge(model or load_model(rules.judge.model), store)
    disputed = {id(example): reason for example, reason in judge.apply(candidates, rules.judge.disagreement)}
    kept = []
    for example in candidates:
        if id(example) in disputed:
            counts["judge_disputed"] += 1
            reviews.append(
                _review_item(
                    example.task_id,
                    workload,
                    example.rule,
                    _review_reason(example, disputed[id(example)]),
                    0.0,
                    now,
                    example,
                )
            )
        else:
            kept.append(example)
    return kept


def _quality_verdict(example: Example, rules: RulesFile) -> str:
    """pass, drop, or the reason it is borderline (just under a threshold)."""
    for dimension in _DIMENSIONS:
        score = example.quality[dimension]["score"]
        threshold = getattr(rules.quality, dimension)
        if score >= threshold:
            continue
        if score >= threshold - rules.quality.borderline:
            return f"{dimension} {score:.2f} is just under its threshold {threshold}"
        return "drop"
    return "pass"


def _review_item(
    task_id: str,
    workload: str,
    rule: str,
    reason: str,
    priority: float,
    now: datetime,
    example: Example | None = None,
) -> dict[str, Any]:
    return {
        "id": f"review-{task_id}",
        "task_id": task_id,
        "workload": workload,
        "reason": reason,
        "rule": rule,
        "priority": priority + (1.0 if example is not None and example.source == "correction" else 0.0),
        "state": "pending",
        "reviewer": None,
        "dataset_id": None,
        "created_at": now,
        "updated_at": now,
        "_tools": example.tools_used if example is not None else [],
    }


def _example_row(example: Example, now: datetime) -> dict[str, Any]:
    return {
        "id": example.id,
        "task_id": example.task_id,
        "session_id": example.session_id,
        "workload": example.workload,
        "kind": example.kind,
        "messages": example.messages,
        "tools": example.tools,
        "target": example.target,
        "rejected": example.rejected,
        "source": example.source,
        "rule": example.rule,
        "quality": example.quality,
        "task_at": example.task_at,
        "created_at": now,
    }


def _example_from_row(row: dict[str, Any]) -> Example:
    from datetime import UTC

    task_at = row["task_at"] if row["task_at"].tzinfo else row["task_at"].replace(tzinfo=UTC)
    return Example(
        id=row["id"],
        task_id=row["task_id"],
        session_id=row["session_id"],
        workload=row["workload"],
        kind=row["kind"],
        messages=row["messages"],
        tools=row["tools"],
        target=row["target"],
        rejected=row["rejected"],
        source=row["source"],
        rule=row["rule"],
        task_at=task_at,
        quality=row["quality"],
    )

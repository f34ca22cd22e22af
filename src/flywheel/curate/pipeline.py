"""One curation run: tasks -> rules -> examples -> quality -> dedup -> staleness
-> splits -> an immutable dataset version, plus review items.

Incremental: a run after an earlier version processes only tasks ingested
since that version's cutoff, and tasks that got new feedback, corrections or
annotations since; everything else is carried over (and re-weighted for age).
"""

from __future__ import annotations

import contextlib
import gc
import hashlib
import logging
import time
from collections import Counter, defaultdict
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import numpy as np

from flywheel.curate.examples import (
    Example,
    assess,
    band_keys,
    build_example,
    dedup_text,
    dominant,
    lsh_components,
    lsh_parameters,
    minhash_signatures,
    normalized_question,
    preference_examples,
    split_of,
    stratified_ranks,
    weight,
)
from flywheel.curate.rules import RulesFile
from flywheel.curate.signals import facts, rule_matcher
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


@contextlib.contextmanager
def _no_cycle_collection() -> Iterator[None]:
    """Curation allocates millions of small, acyclic objects (decoded JSON, rows);
    Python's cycle collector would walk the growing heap again and again (about
    half the loading time at 1M tasks). Reference counting frees them as before."""
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()


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
    with _no_cycle_collection():
        return _curate(store, workload, rules, now=now, progress=progress, judge_model=judge_model)


class _Clock:
    """Seconds spent in each phase of a run (reported in the dataset's summary)."""

    def __init__(self) -> None:
        self.laps: dict[str, float] = {}
        self._last = time.perf_counter()

    def lap(self, phase: str) -> None:
        now = time.perf_counter()
        self.laps[phase] = round(now - self._last, 3)
        self._last = now


@dataclass(slots=True)
class _Kept:
    """What the rest of a run needs of an example once its row is written: a few
    hundred bytes instead of its messages, tools and scores."""

    id: str
    task_id: str
    session_id: str
    workload: str
    kind: str
    source: str
    task_at: datetime
    tools: tuple[str, ...]
    question: int  # hash of the normalised question (within this run)
    weight: float
    key_row: int  # its row of band keys
    stored: bool = False  # its example row is in the store
    fresh: bool = False  # ... written by this run

    def preferred_to(self, other: _Kept) -> bool:
        return (self.task_at, self.source == "correction") > (other.task_at, other.source == "correction")


@dataclass(slots=True)
class _Review:
    task_id: str
    rule: str
    reason: str
    priority: float
    tools: tuple[str, ...]


class _Pool:
    """The run's examples, exactly deduplicated as they arrive (an id names one
    content; the kept member is the corrected, then the freshest), with the LSH
    band keys of each for near-duplicate detection at the end."""

    def __init__(self, store: Store, rules: RulesFile, now: datetime) -> None:
        self.store, self.rules, self.now = store, rules, now
        self.bands, self.rows = lsh_parameters(rules.dedup.near_threshold, rules.dedup.num_perm)
        self.kept: list[_Kept] = []
        self.index: dict[str, int] = {}
        self.keys: list[np.ndarray] = []
        self.offered = 0

    def _compact(self, example: Example, key_row: int) -> _Kept:
        return _Kept(
            example.id,
            example.task_id,
            example.session_id,
            example.workload,
            example.kind,
            example.source,
            example.task_at,
            tuple(example.tools_used),
            hash(normalized_question(example)),
            weight(example, self.rules),
            key_row,
        )

    def add(self, examples: list[Example], *, stored: bool = False) -> None:
        """Take a batch; write the rows of new winners (unless ``stored``: carried over)."""
        if not examples:
            return
        start = sum(len(k) for k in self.keys)
        signatures = minhash_signatures(
            [dedup_text(e.question, e.target) for e in examples], self.rules.dedup.num_perm
        )
        self.keys.append(band_keys(signatures, self.bands, self.rows))
        pending: dict[str, Example] = {}  # not in the store yet: the winner's row is written
        updates: dict[str, Example] = {}  # written by this run for a member that lost since
        for offset, example in enumerate(examples):
            self.offered += 1
            compact = self._compact(example, start + offset)
            compact.stored = stored
            position = self.index.get(example.id)
            if position is None:
                self.index[example.id] = len(self.kept)
                self.kept.append(compact)
            else:
                old = self.kept[position]
                if not compact.preferred_to(old):
                    continue
                compact.key_row = old.key_row  # the same content: the same band keys
                compact.stored, compact.fresh = old.stored or stored, old.fresh
                self.kept[position] = compact
            if compact.fresh:
                updates[example.id] = example
            elif not compact.stored:
                pending[example.id] = example
        if pending:
            fresh = self.store.add_examples([_example_row(e, self.now) for e in pending.values()])
            for example_id in pending:
                compact = self.kept[self.index[example_id]]
                compact.stored, compact.fresh = True, example_id in fresh
        if updates:
            self.store.update_examples([_example_row(e, self.now) for e in updates.values()])

    def band_keys(self) -> np.ndarray:
        if not self.keys:
            return np.zeros((0, self.bands), dtype=np.uint64)
        return np.concatenate(self.keys)


def _curate(
    store: Store,
    workload: str,
    rules: RulesFile,
    *,
    now: datetime | None,
    progress: Callable[[int], None] | None,
    judge_model: Any,
) -> CurationResult:
    now = now or utcnow()
    clock = _Clock()
    previous = store.latest_dataset(workload)
    cutoff = now
    percentiles = store.latency_percentiles(workload)
    counts: Counter[str] = Counter()
    per_rule: Counter[str] = Counter()
    usable_per_rule: Counter[str] = Counter()
    handled: Counter[str] = Counter()  # tasks with missing pieces etc.
    reviews: list[_Review] = []
    reprocessed: set[str] = set()
    tool_counts: Counter[str] = Counter()
    pool = _Pool(store, rules, now)
    match = rule_matcher(rules.rules)
    judge = _judge_of(store, rules, judge_model)
    processed = accepted = 0
    after = previous["cutoff"] if previous and previous["rules_hash"] == rules.hash else None
    for chunk in store.iter_curation_tasks(workload, ingested_after=after, ingested_until=cutoff):
        candidates: list[Example] = []
        for task in chunk:
            processed += 1
            if previous is not None:
                reprocessed.add(task.id)
            rule = match(facts(task, percentiles))
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
                    reviews.append(_Review(task.id, rule.name, f"rule {rule.name!r}", 0.5, ()))
                continue
            tool_counts.update(example.tools_used)
            if rule.action == "review":  # a human decides: no scores needed yet
                reviews.append(_review(example, f"rule {rule.name!r}"))
                continue
            example.quality = assess(example, rules, now)
            verdict = _quality_verdict(example, rules)
            if verdict == "drop":
                counts["low_quality"] += 1
                continue
            if verdict != "pass":
                reviews.append(_review(example, verdict))
                counts["borderline"] += 1
                continue
            candidates.append(example)
            usable_per_rule[rule.name] += 1
            for pair in preference_examples(task, rule.name):
                pair.quality = assess(pair, rules, now)
                candidates.append(pair)
        if judge is not None and candidates:
            candidates = _judged(judge, rules, candidates, reviews, counts)
        accepted += len(candidates)
        pool.add(candidates)
        if progress:
            progress(processed)
    if previous is None and processed == 0:
        raise InvalidInput(
            f"no finished tasks of workload {workload!r} to curate",
            hint="log some traffic first (flywheel simulate)",
        )

    clock.lap("examples")
    # Carry over the previous version's examples whose tasks were not reprocessed.
    previous_split: dict[str, str] = {}
    carried = 0
    if previous is not None:
        membership = store.dataset_membership(previous["id"])
        ids = list(membership)
        for start in range(0, len(ids), 5000):
            rows = store.examples_by_id(ids[start : start + 5000])
            batch = []
            for example_id in ids[start : start + 5000]:
                row = rows.get(example_id)
                if row is None or row["task_id"] in reprocessed:
                    continue
                example = _example_from_row(row)
                example.quality = assess(example, rules, now)
                batch.append(example)
                previous_split[row["session_id"]] = membership[example_id][0]
            carried += len(batch)
            pool.add(batch, stored=True)
    counts["exact_duplicates"] = pool.offered - len(pool.kept)
    kept = pool.kept
    clock.lap("carried_over")

    # Staleness: too old and not re-validated -> dropped.
    discarded: list[_Kept] = []
    drop_after = rules.staleness.drop_after_days
    if drop_after is not None:
        fresh = [e for e in kept if (now - e.task_at).total_seconds() / 86400 <= drop_after]
        counts["stale_dropped"] = len(kept) - len(fresh)
        discarded += [e for e in kept if (now - e.task_at).total_seconds() / 86400 > drop_after]
        kept = fresh

    # Near-duplicates keep the corrected, then the freshest member.
    keys = pool.band_keys()[[e.key_row for e in kept]] if kept else np.zeros((0, pool.bands), np.uint64)
    clusters: dict[int, list[int]] = defaultdict(list)
    for i, label in enumerate(lsh_components(keys).tolist()):
        clusters[label].append(i)
    survivors = []
    for members in clusters.values():
        best = max(members, key=lambda i: (kept[i].source == "correction", kept[i].task_at))
        survivors.append(kept[best])
        discarded += [kept[i] for i in members if i != best]
    counts["near_duplicates"] = len(kept) - len(survivors)
    kept = sorted(survivors, key=lambda e: (e.task_at, e.id))
    clock.lap("dedup")

    # Splits: by session (no session in two splits), stratified by workload and tool.
    members_of: dict[str, list[_Kept]] = {}
    for member in kept:
        members_of.setdefault(member.session_id, []).append(member)
    keys_of_sessions = sorted(members_of)
    strata = []
    for key in keys_of_sessions:
        tools = [tool for member in members_of[key] for tool in member.tools] or ["(none)"]
        strata.append(f"{members_of[key][0].workload}|{dominant(tools)}")
    # A tool stratum too small to hold every split joins its workload's pool of rare tools.
    smallest = min([f for f in (rules.splits.eval, rules.splits.few_shot) if f > 0] or [1.0])
    sizes = Counter(strata)
    strata = [s if sizes[s] * smallest >= 1 else s.split("|", 1)[0] + "|(rare tools)" for s in strata]
    ranks = stratified_ranks(keys_of_sessions, strata, rules.splits.seed)
    split_of_session = {
        key: previous_split.get(key) or split_of(ranks[key], rules)
        for key in keys_of_sessions  # eval stays eval
    }
    # The same question asked in another session must not train what eval measures.
    eval_questions = {
        e.question for k in keys_of_sessions if split_of_session[k] == "eval" for e in members_of[k]
    }
    membership_rows: list[tuple[str, str, float]] = []
    split_counts: Counter[str] = Counter()
    final: list[_Kept] = []
    for key in keys_of_sessions:
        split = split_of_session[key]
        for member in members_of[key]:
            if split != "eval" and member.question in eval_questions:
                counts["dropped_eval_overlap"] += 1
                discarded.append(member)
                continue
            final.append(member)
            split_counts[split] += 1
            membership_rows.append((member.id, split, member.weight))

    usable = len(membership_rows)
    clock.lap("splits")
    summary = {
        "tasks_processed": processed,
        "carried_over": carried,
        "actions": dict(counts),
        "per_rule": dict(per_rule),
        "handled": dict(handled),
        "examples": usable,
        "splits": dict(split_counts),
        "sources": dict(Counter(e.source for e in final)),
        "kinds": dict(Counter(e.kind for e in final)),
        "review_items": len(reviews),
        "signal_density": {
            "overall": round(1000 * accepted / processed, 2) if processed else None,
            "per_rule": {r: round(1000 * n / processed, 2) for r, n in usable_per_rule.items()}
            if processed
            else {},
        },
        "latency_percentiles_ms": percentiles,
        "seconds": clock.laps,  # by phase; "save" is written into the row afterwards
    }
    number = (previous["number"] + 1) if previous else 1
    content = hashlib.sha256(
        (rules.hash + "".join(sorted(f"{m[0]}:{m[1]}" for m in membership_rows))).encode()
    ).hexdigest()[:16]
    dataset_id = f"ds-{workload[:40]}-{number}-{content}"

    def review_rows() -> Iterator[dict[str, Any]]:
        # corrections-adjacent and rare tools first
        for item in reviews:
            rarity = 1.0 / (1 + min((tool_counts[t] for t in item.tools), default=0))
            yield {
                "id": f"review-{item.task_id}",
                "task_id": item.task_id,
                "workload": workload,
                "reason": item.reason,
                "rule": item.rule,
                "priority": round(item.priority + rarity, 6),
                "state": "pending",
                "reviewer": None,
                "dataset_id": dataset_id,
                "created_at": now,
                "updated_at": now,
            }

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
        [{"dataset_id": dataset_id, "example_id": i, "split": s, "weight": w} for i, s, w in membership_rows],
        review_rows(),
        discard=[e.id for e in discarded if e.fresh],
    )
    clock.lap("save")
    return CurationResult(dataset_id, number, workload, summary)


def _judge_of(store: Store, rules: RulesFile, model: Any) -> Any:
    if rules.judge is None:
        return None
    from flywheel.curate.judge import Judge
    from flywheel.models.registry import load_model

    return Judge(model or load_model(rules.judge.model), store)


def _judged(
    judge: Any, rules: RulesFile, candidates: list[Example], reviews: list[_Review], counts: Counter[str]
) -> list[Example]:
    """The candidates the judge does not dispute; the disputed ones go to review."""
    assert rules.judge is not None
    disputed = {id(example): reason for example, reason in judge.apply(candidates, rules.judge.disagreement)}
    kept = []
    for example in candidates:
        if id(example) in disputed:
            counts["judge_disputed"] += 1
            reviews.append(_review(example, disputed[id(example)]))
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


def _review(example: Example, reason: str) -> _Review:
    """A review item for a task whose example is borderline (corrections first)."""
    return _Review(
        example.task_id,
        example.rule,
        _review_reason(example, reason),
        1.0 if example.source == "correction" else 0.0,
        tuple(example.tools_used),
    )


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

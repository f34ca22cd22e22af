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
import os
import pickle
import time
import zlib
from collections import Counter, defaultdict
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, fields
from datetime import datetime
from itertools import starmap
from operator import attrgetter
from typing import Any

import numpy as np
import orjson

from flywheel.curate.examples import (
    Example,
    assess,
    band_keys,
    build_example,
    clusters_of,
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
from flywheel.curate.priority import Coverage, Scorer, disagreement_of, disagreement_signal, uncertainty_of
from flywheel.curate.rules import RulesFile
from flywheel.curate.signals import TaskFacts, facts, rule_matcher
from flywheel.errors import InvalidInput
from flywheel.records import CurationTask, utcnow
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
    workers: int | None = None,
    chunk_size: int = 5000,
) -> CurationResult:
    """One curation run (see the module's docstring). ``judge_model`` overrides
    the rules file's judge endpoint (a ``ChatModel``). ``workers``: processes for
    pass one (default: one per core, up to 4, when there are at least 20 chunks
    of ``chunk_size`` tasks; 1: in this process)."""
    with _no_cycle_collection():
        return _curate(
            store,
            workload,
            rules,
            now=now,
            progress=progress,
            judge_model=judge_model,
            workers=workers,
            chunk_size=chunk_size,
        )


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
    """What pass two needs of an example: a few hundred bytes instead of its
    messages, tools and scores (its encoded row waits, compressed, in its chunk)."""

    id: str
    task_id: str
    session_id: str
    workload: str
    kind: str
    source: str
    task_at: datetime
    tools: tuple[str, ...]
    question: int  # a hash of the normalised question
    weight: float
    rule: str  # the rule that chose its task
    chunk: int  # its chunk's number; -1: carried over (its row is in the store)
    row: int  # its row within the chunk, and within the chunk's band keys

    def preferred_to(self, other: _Kept) -> bool:
        return (self.task_at, self.source == "correction") > (other.task_at, other.source == "correction")


_Margin = tuple[str, float, float, float]  # (dimension, score, threshold, borderline or judge's score)


@dataclass(slots=True)
class _Review:
    """A review item as pass one makes it: its terms worked out where the task is at
    hand (in a worker), coverage and novelty added in pass two."""

    task_id: str
    rule: str
    tools: tuple[str, ...] | None  # its answer's tools; None: no answer to learn from
    guessed: bool  # tools: the ones offered (it called none of them)
    intent: str | None
    uncertainty: tuple[float, str]
    disagreement: tuple[float, str]
    factors: str  # the JSON of its factors (``flywheel.curate.priority.value``)


@dataclass
class _Chunk:
    """What pass one makes of one chunk of tasks."""

    processed: int = 0
    task_ids: list[str] = field(default_factory=list)  # when the run is incremental
    counts: Counter[str] = field(default_factory=Counter)
    per_rule: Counter[str] = field(default_factory=Counter)
    handled: Counter[str] = field(default_factory=Counter)
    tool_counts: Counter[str] = field(default_factory=Counter)
    reviews: list[_Review] = field(default_factory=list)
    kept: list[_Kept] = field(default_factory=list)
    keys: Any = None  # numpy (len(kept), bands) uint64
    rows: bytes = b""  # the examples' encoded rows: zlib(pickle(list of tuples))
    tool_sets: dict[str, Any] = field(default_factory=dict)  # the tool sets the rows name

    # A worker's chunk travels pickled: its thousands of examples and review items as
    # plain tuples, which pickle in C (a slotted dataclass goes through Python per
    # object: twice the time, in the workers and in the process that gathers them).
    def __getstate__(self) -> dict[str, Any]:
        state = dict(self.__dict__)
        state["kept"] = list(map(_KEPT_VALUES, self.kept))
        state["reviews"] = list(map(_REVIEW_VALUES, self.reviews))
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        state["kept"] = list(starmap(_Kept, state["kept"]))
        state["reviews"] = list(starmap(_Review, state["reviews"]))
        self.__dict__.update(state)


_KEPT_VALUES = attrgetter(*(f.name for f in fields(_Kept)))
_REVIEW_VALUES = attrgetter(*(f.name for f in fields(_Review)))
_Job = tuple[int, Any, Any, dict[str, float]]  # (chunk number, first, following, latency percentiles)


def _question_hash(example: Example) -> int:
    digest = hashlib.blake2b(normalized_question(example).encode(), digest_size=8).digest()
    return int.from_bytes(digest, "little")


def _compact(example: Example, rules: RulesFile, chunk: int, row: int) -> _Kept:
    return _Kept(
        example.id,
        example.task_id,
        example.session_id,
        example.workload,
        example.kind,
        example.source,
        example.task_at,
        tuple(example.tools_used),
        _question_hash(example),
        weight(example, rules),
        example.rule,
        chunk,
        row,
    )


def _keys(examples: list[Example], rules: RulesFile) -> np.ndarray:
    bands, rows = lsh_parameters(rules.dedup.near_threshold, rules.dedup.num_perm)
    signatures = minhash_signatures(
        [dedup_text(e.question, e.target) for e in examples], rules.dedup.num_perm
    )
    return band_keys(signatures, bands, rows)


class _PassOne:
    """Pass one over a chunk of tasks: rules, examples, quality, review items,
    band keys and the encoded rows. The same in this process or in a worker."""

    def __init__(
        self,
        store: Store,
        workload: str,
        rules: RulesFile,
        now: datetime,
        window: tuple[datetime | None, datetime | None],
        incremental: bool,
        judge: Any = None,
    ) -> None:
        self.store, self.workload, self.rules, self.now = store, workload, rules, now
        self.window, self.incremental, self.judge = window, incremental, judge
        self.match = rule_matcher(rules.rules)

    def __call__(self, job: _Job) -> _Chunk:
        number, first, following, percentiles = job
        rules, now, out = self.rules, self.now, _Chunk()
        after, until = self.window
        tasks = self.store.curation_tasks(
            self.workload, first, following, ingested_after=after, ingested_until=until
        )
        candidates: list[Example] = []
        about: dict[str, TaskFacts] = {}  # task id -> what a judge's dispute needs of it
        offered = _Offered()  # the names in each offered tool list (a chunk's tasks share them)
        for task in tasks:
            out.processed += 1
            if self.incremental:
                out.task_ids.append(task.id)
            known = facts(task, percentiles)
            rule = self.match(known)
            if rule is None:
                out.counts["unmatched"] += 1
                continue
            out.per_rule[rule.name] += 1
            out.counts[rule.action] += 1
            if rule.action == "drop":
                continue
            example = None
            try:
                example = build_example(
                    task,
                    "train_negative" if rule.action == "train_negative" else "train_positive",
                    rule.name,
                    drop_system=rules.drop_system_messages,
                )
            except (KeyError, TypeError, ValueError) as exc:  # malformed logged content: count it, go on
                out.handled["malformed"] += 1
                log.debug("task %s: cannot build an example: %s", task.id, exc)
            if example is None:
                out.handled["no_llm_call_or_answer"] += 1
                if rule.action == "review":
                    out.reviews.append(_review(task.id, rule.name, None, known, offered))
                continue
            out.tool_counts.update(example.tools_used)
            if rule.action == "review":  # a human decides: no scores needed yet
                out.reviews.append(_review(task.id, rule.name, example, known, offered))
                continue
            example.quality = assess(example, rules, now)
            verdict = _quality_verdict(example, rules)
            if verdict == "drop":
                out.counts["low_quality"] += 1
                continue
            if not isinstance(verdict, str):  # a score just under its threshold
                out.reviews.append(_review(task.id, rule.name, example, known, offered, margin=verdict))
                out.counts["borderline"] += 1
                continue
            if self.judge is not None:
                about[task.id] = known
            candidates.append(example)
            for pair in preference_examples(task, rule.name, drop_system=rules.drop_system_messages):
                pair.quality = assess(pair, rules, now)
                candidates.append(pair)
        if self.judge is not None and candidates:
            candidates = _judged(self.judge, rules, candidates, out.reviews, out.counts, about, offered)
        out.kept = [_compact(e, rules, number, row) for row, e in enumerate(candidates)]
        out.keys = _keys(candidates, rules) if candidates else None
        encoded, out.tool_sets = self.store.encode_examples([_example_row(e, now) for e in candidates])
        out.rows = zlib.compress(pickle.dumps(encoded, protocol=pickle.HIGHEST_PROTOCOL), 1)
        return out


_worker: _PassOne | None = None


def _start_worker(
    database_url: str,
    workload: str,
    rules_source: str,
    now: datetime,
    window: tuple[datetime | None, datetime | None],
    incremental: bool,
) -> None:
    from flywheel.config import Settings
    from flywheel.curate.rules import parse_rules

    global _worker
    gc.disable()  # see _no_cycle_collection
    store = Store.open(Settings(database_url=database_url))
    _worker = _PassOne(store, workload, parse_rules(rules_source), now, window, incremental)


def _work(job: _Job) -> _Chunk:
    assert _worker is not None, "worker not started"
    return _worker(job)


@contextlib.contextmanager
def _pass_one_map(
    store: Store, passer: _PassOne, jobs: int, workers: int | None
) -> Iterator[Callable[[list[_Job]], Iterator[_Chunk]]]:
    """How pass one runs over the chunks, in order: here, or in worker processes
    (one per core) when there are many chunks and nothing needs this process
    (no LLM judge, a database other processes can open)."""
    url = store.engine.url
    shareable = url.get_backend_name() == "postgresql" or (url.database not in (None, "", ":memory:"))
    if workers is None:
        workers = min(os.cpu_count() or 1, 4) if jobs >= 20 else 1
    if workers <= 1 or passer.judge is not None or not shareable:
        yield lambda todo: map(passer, todo)
        return
    import multiprocessing

    context = multiprocessing.get_context("spawn")  # no inherited connections or threads
    args = (
        url.render_as_string(hide_password=False),
        passer.workload,
        passer.rules.source,
        passer.now,
        passer.window,
        passer.incremental,
    )
    with context.Pool(workers, initializer=_start_worker, initargs=args) as processes:
        yield lambda todo: processes.imap(_work, todo)


def _curate(
    store: Store,
    workload: str,
    rules: RulesFile,
    *,
    now: datetime | None,
    progress: Callable[[int], None] | None,
    judge_model: Any,
    workers: int | None,
    chunk_size: int,
) -> CurationResult:
    now = now or utcnow()
    clock = _Clock()
    previous = store.latest_dataset(workload)
    cutoff = now
    counts: Counter[str] = Counter()
    per_rule: Counter[str] = Counter()
    handled: Counter[str] = Counter()  # tasks with missing pieces etc.
    tool_counts: Counter[str] = Counter()
    reviews: list[_Review] = []
    reprocessed: set[str] = set()
    kept: list[_Kept] = []
    index: dict[str, int] = {}  # example id -> its position in kept (exact dedup)
    keys: list[Any] = []  # band keys by chunk
    rows: list[bytes] = []  # encoded rows by chunk
    tool_sets: dict[str, Any] = {}  # the tool sets they name
    processed = offered = 0
    after = previous["cutoff"] if previous and previous["rules_hash"] == rules.hash else None
    # The latency percentiles (for the slow signal: a read of every task's duration)
    # in a thread while the chunks are listed: two queries of about a second each.
    with ThreadPoolExecutor(1) as aside:
        pending = aside.submit(store.latency_percentiles, workload)
        chunks = store.curation_chunks(
            workload, ingested_after=after, ingested_until=cutoff, chunk=chunk_size
        )
        percentiles = pending.result()
    passer = _PassOne(
        store,
        workload,
        rules,
        now,
        (after, cutoff),
        previous is not None,
        _judge_of(store, rules, judge_model),
    )

    def take(members: list[_Kept]) -> None:
        """Exact duplicates share an id: the corrected, then the freshest member stays."""
        nonlocal offered
        for member in members:
            offered += 1
            position = index.get(member.id)
            if position is None:
                index[member.id] = len(kept)
                kept.append(member)
            elif member.preferred_to(kept[position]):
                kept[position] = member

    with _pass_one_map(store, passer, len(chunks), workers) as run:
        jobs = [(n, first, following, percentiles) for n, (first, following) in enumerate(chunks)]
        for chunk in run(jobs):
            processed += chunk.processed
            reprocessed.update(chunk.task_ids)
            for total, part in (
                (counts, chunk.counts), (per_rule, chunk.per_rule), (handled, chunk.handled),
                (tool_counts, chunk.tool_counts),
            ):  # fmt: skip
                total.update(part)
            reviews.extend(chunk.reviews)
            keys.append(chunk.keys)
            rows.append(chunk.rows)
            tool_sets.update(chunk.tool_sets)
            take(chunk.kept)
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
    # Questions the previous version's train and few-shot splits held: a version
    # built from it may have learnt their answers, so they are held out no more.
    trained: set[int] = set()
    carried = 0
    carried_keys: list[Any] = []
    known: set[str] = set()  # the previous version's examples: no new signal when seen again
    if previous is not None:
        membership = store.dataset_membership(previous["id"])
        known.update(membership)
        ids = list(membership)
        for start in range(0, len(ids), 5000):
            found = store.examples_by_id(ids[start : start + 5000])
            batch = []
            for example_id in ids[start : start + 5000]:
                row = found.get(example_id)
                if row is None:
                    continue
                example = _example_from_row(row)
                if row["task_id"] in reprocessed:
                    if membership[example_id][0] != "eval":
                        trained.add(_question_hash(example))
                    continue
                example.quality = assess(example, rules, now)
                batch.append(example)
                previous_split[row["session_id"]] = membership[example_id][0]
            if batch:
                base = sum(len(k) for k in carried_keys)
                carried_keys.append(_keys(batch, rules))
                compact = [_compact(e, rules, -1, base + i) for i, e in enumerate(batch)]
                trained.update(c.question for c in compact if previous_split[c.session_id] != "eval")
                take(compact)
                carried += len(batch)
    counts["exact_duplicates"] = offered - len(kept)
    clock.lap("carried_over")

    # Staleness: too old and not re-validated -> dropped.
    drop_after = rules.staleness.drop_after_days
    if drop_after is not None:
        fresh = [e for e in kept if (now - e.task_at).total_seconds() / 86400 <= drop_after]
        counts["stale_dropped"] = len(kept) - len(fresh)
        kept = fresh

    # Near-duplicates keep the corrected, then the freshest member.
    carried_keys_all: Any = np.concatenate(carried_keys) if carried_keys else None

    def band_row(member: _Kept) -> Any:
        return (carried_keys_all if member.chunk < 0 else keys[member.chunk])[member.row]

    bands, _ = lsh_parameters(rules.dedup.near_threshold, rules.dedup.num_perm)
    matrix = np.stack([band_row(e) for e in kept]) if kept else np.zeros((0, bands), np.uint64)
    survivors = []
    for members in clusters_of(lsh_components(matrix)):
        best = kept[max(members, key=lambda i: (kept[i].source == "correction", kept[i].task_at))]
        if best.chunk >= 0 and any(kept[i].chunk < 0 for i in members):
            known.add(best.id)  # a fresher copy of an example the dataset held
        survivors.append(best)
    counts["near_duplicates"] = len(kept) - len(survivors)
    kept = sorted(survivors, key=lambda e: (e.task_at, e.id))
    clock.lap("dedup")

    # Splits: by session (no session in two splits), stratified by workload and tool.
    members_of: dict[str, list[_Kept]] = {}
    for member in kept:
        members_of.setdefault(member.session_id, []).append(member)
    sessions = sorted(members_of)
    strata = []
    for key in sessions:
        tools = [tool for member in members_of[key] for tool in member.tools] or ["(none)"]
        strata.append(f"{members_of[key][0].workload}|{dominant(tools)}")
    # A tool stratum too small to hold every split joins its workload's pool of rare tools.
    smallest = min([f for f in (rules.splits.eval, rules.splits.few_shot) if f > 0] or [1.0])
    sizes = Counter(strata)
    strata = [s if sizes[s] * smallest >= 1 else s.split("|", 1)[0] + "|(rare tools)" for s in strata]
    ranks = stratified_ranks(sessions, strata, rules.splits.seed)
    split_of_session = {
        key: previous_split.get(key) or split_of(ranks[key], rules)
        for key in sessions  # eval stays eval
    }
    # The same question asked in another session must not train what eval
    # measures; and a question an earlier version trained on is no longer held
    # out (eval would flatter that version against every candidate).
    eval_questions = {e.question for k in sessions if split_of_session[k] == "eval" for e in members_of[k]}
    eval_questions -= trained
    # The workload's standing evaluation set never trains either (its retired items too).
    standing = store.eval_set_questions(workload)
    membership_rows: list[tuple[str, str, float]] = []
    split_counts: Counter[str] = Counter()
    final: list[_Kept] = []
    for key in sessions:
        split = split_of_session[key]
        for member in members_of[key]:
            if split == "eval" and member.question in trained:
                counts["dropped_trained_overlap"] += 1
                continue
            if split != "eval" and member.question in eval_questions:
                counts["dropped_eval_overlap"] += 1
                continue
            if split != "eval" and member.question in standing:
                counts["dropped_standing_eval_overlap"] += 1
                continue
            final.append(member)
            split_counts[split] += 1
            membership_rows.append((member.id, split, member.weight))
    clock.lap("splits")

    # Signal density: the new examples this run's tasks added to the version, after
    # exact and near-duplicate removal, staleness and the splits' overlap drops.
    usable_per_rule = Counter(m.rule for m in final if m.chunk >= 0 and m.id not in known)
    usable = sum(usable_per_rule.values())
    coverage = _eval_coverage(final, membership_rows, tool_counts)
    summary = {
        "tasks_processed": processed,
        "carried_over": carried,
        "actions": dict(counts),
        "per_rule": dict(per_rule),
        "handled": dict(handled),
        "examples": len(membership_rows),
        "splits": dict(split_counts),
        "sources": dict(Counter(e.source for e in final)),
        "kinds": dict(Counter(e.kind for e in final)),
        "review_items": len(reviews),
        "eval_coverage": {  # what review items' priorities count (flywheel.curate.priority)
            "tools": dict(sorted(coverage.tools.items())),
            "examples": dict(sorted(tool_counts.items())),
        },
        "signal_density": {
            "counts": "new examples this run's tasks added to the version (after exact and near-duplicate "
            "removal, staleness and split-overlap drops; not one the previous version held, nor a "
            "fresher copy of one) per 1,000 tasks processed",
            "examples": usable,
            "overall": round(1000 * usable / processed, 2) if processed else None,
            "per_rule": {r: round(1000 * n / processed, 2) for r, n in sorted(usable_per_rule.items())}
            if processed
            else {},
        },
        "latency_percentiles_ms": percentiles,
        "seconds": clock.laps,  # by phase; "save" is added to the returned summary only
    }
    number = (previous["number"] + 1) if previous else 1
    content = hashlib.sha256(
        (rules.hash + "".join(sorted(f"{m[0]}:{m[1]}" for m in membership_rows))).encode()
    ).hexdigest()[:16]
    dataset_id = f"ds-{workload[:40]}-{number}-{content}"

    def review_rows() -> Iterator[dict[str, Any]]:
        # in the order of their keys: the indexes grow at one end instead of
        # taking random inserts (a third faster at half a million items)
        score = Scorer(coverage, rules.review_priority).score
        for item in sorted(reviews, key=attrgetter("task_id")):
            priority, reason = score(
                item.uncertainty, item.disagreement, item.tools, item.intent, item.rule, guessed=item.guessed
            )
            yield {
                "id": f"review-{item.task_id}",
                "task_id": item.task_id,
                "workload": workload,
                "reason": reason,
                "rule": item.rule,
                "priority": priority,
                "state": "pending",
                "reviewer": None,
                "dataset_id": dataset_id,
                "created_at": now,
                "updated_at": now,
                "factors": item.factors,  # JSON already (made in pass one)
                "cycle_id": None,
            }

    def example_rows() -> Iterator[list[tuple[Any, ...]]]:
        """The surviving examples' rows, chunk by chunk (carried ones are stored)."""
        wanted: dict[int, list[int]] = defaultdict(list)
        for member in final:
            if member.chunk >= 0:
                wanted[member.chunk].append(member.row)
        for number_of_chunk in sorted(wanted):
            encoded = pickle.loads(zlib.decompress(rows[number_of_chunk]))
            yield [encoded[row] for row in sorted(wanted[number_of_chunk])]

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
        [
            {"dataset_id": dataset_id, "example_id": i, "split": s, "weight": w}
            for i, s, w in sorted(membership_rows)  # in key order, as the review items
        ],
        review_rows(),
        example_rows(),
        tool_sets,
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
    judge: Any,
    rules: RulesFile,
    candidates: list[Example],
    reviews: list[_Review],
    counts: Counter[str],
    about: dict[str, TaskFacts],
    offered: _Offered,
) -> list[Example]:
    """The candidates the judge does not dispute; the disputed ones go to review."""
    assert rules.judge is not None
    disputed = {id(example) for example, _ in judge.apply(candidates, rules.judge.disagreement)}
    kept = []
    for example in candidates:
        if id(example) not in disputed:
            kept.append(example)
            continue
        counts["judge_disputed"] += 1
        judge = None
        for dimension in _DIMENSIONS:  # the dimension it disputes (as Judge.apply finds it)
            theirs = example.quality.get(f"{dimension}_judge", {}).get("score")
            ours = example.quality.get(dimension, {}).get("score")
            if theirs is not None and ours is not None and abs(ours - theirs) > rules.judge.disagreement:
                judge = (dimension, theirs, ours, getattr(rules.quality, dimension))
                break
        known = about[example.task_id]
        reviews.append(_review(example.task_id, example.rule, example, known, offered, judge=judge))
    return kept


def _quality_verdict(example: Example, rules: RulesFile) -> str | _Margin:
    """pass, drop, or the margin of a score that is borderline (just under its
    threshold): (dimension, score, threshold, borderline)."""
    for dimension in _DIMENSIONS:
        score = example.quality[dimension]["score"]
        threshold = getattr(rules.quality, dimension)
        if score >= threshold:
            continue
        if score >= threshold - rules.quality.borderline:
            return (dimension, score, threshold, rules.quality.borderline)
        return "drop"
    return "pass"


class _Offered(dict[int, tuple[Any, frozenset[str]]]):
    """The tool names of offered tool lists, by the list (the tasks of a chunk share
    one decoded list per distinct list; each is held, so that its id stays its own)."""

    def names(self, tools: Any) -> frozenset[str]:
        known = self.get(id(tools))
        if known is None:
            names = set()
            for tool in tools if isinstance(tools, list) else ():
                spec = tool.get("function", tool) if isinstance(tool, dict) else None
                if isinstance(spec, dict) and isinstance(spec.get("name"), str):
                    names.add(spec["name"])
            known = self[id(tools)] = (tools, frozenset(names))
        return known[1]


def _strata_tools(example: Example | None, offered: _Offered) -> tuple[tuple[str, ...] | None, bool]:
    """The tools that place an item's answer in the evaluation set's strata, and
    whether they are a guess: the tools it called that were offered; when it called
    none of them (a tool that does not exist), the tools it was offered."""
    if example is None:
        return None, False
    called = tuple(example.tools_used)
    if not called or not example.tools:
        return called, False
    names = offered.names(example.tools)
    right = tuple(c for c in called if c in names)
    if right or not names:
        return (right or called), False
    return tuple(sorted(names)), True


def _review(
    task_id: str,
    rule: str,
    example: Example | None,
    known: TaskFacts,
    offered: _Offered,
    margin: _Margin | None = None,
    judge: _Margin | None = None,
) -> _Review:
    """A review item: what its priority is made of (see ``flywheel.curate.priority``)."""
    task = known.task
    signal = disagreement_signal(
        task.success,
        known.negative,
        known.positive,
        known.edit_after_hours is not None,
        known.corrected or (example is not None and example.source == "correction"),
        known.tool_errors > 0 or known.retries > 0 or known.fallback,
    )
    tools, guessed = _strata_tools(example, offered)
    intent = task.intent if isinstance(task, CurationTask) else _intent_of(task.metadata)
    confidence = task.confidence
    factors: dict[str, Any] = {}  # a factor that is None is left out (a third of the bytes to write)
    if confidence is not None:
        factors["confidence"] = confidence
    if signal is not None:
        factors["signal"] = signal
    if margin is not None:
        factors["margin"] = margin
    if judge is not None:
        factors["judge"] = judge
    if tools is not None:
        factors["tools"] = tools
        if guessed:
            factors["guessed"] = True
    if intent is not None:
        factors["intent"] = intent
    return _Review(
        task_id,
        rule,
        tools,
        guessed,
        intent,
        uncertainty_of(confidence, margin),
        disagreement_of(signal, judge),
        orjson.dumps(factors).decode(),
    )


def _intent_of(metadata: dict[str, Any] | None) -> str | None:
    found = (metadata or {}).get("intent") or (metadata or {}).get("category")
    return None if found is None else str(found)[:150]


def _eval_coverage(
    final: list[_Kept], membership: list[tuple[str, str, float]], tool_counts: Counter[str]
) -> Coverage:
    """The eval split's answers (sft examples) per tool they call (``(text)``: none),
    and the run's examples per tool."""
    tools: Counter[str] = Counter()
    for member, (_, split, _) in zip(final, membership, strict=True):
        if split == "eval" and member.kind == "sft":
            tools.update(member.tools or _TEXT)
    return Coverage(tools, None, "eval split", tool_counts)


_TEXT = ("(text)",)


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

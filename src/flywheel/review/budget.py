"""The review budget: which pending items a cycle asks humans to label.

Curation ranks every review item by the expected value of labelling it
(``flywheel.curate.priority``). Each cycle's review stage then

1. ranks the workload's pending items again (``rank_review_items``) against
   the evaluation set as it is now (the standing set, or the dataset's eval
   split), since an item queued cycles ago was scored against a thinner one;
2. marks the ``review_budget`` highest as the cycle's batch (``cycle_id``)
   (``select_review_batch``); the rest stay pending, ranked, not queued.

The evaluation stage (or anything else) can raise items where labels count
more, for instance the tasks whose eval items a candidate and the stable
version answered differently (``boost_review_items``)::

    example_ids = [i for i in items if baseline[i].correct != candidate[i].correct]
    tasks = [row["task_id"] for row in store.examples_by_id(example_ids).values()]
    boost_review_items(store, workload, tasks, "candidate and stable disagree", 1.0)
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from flywheel.curate.priority import Coverage, Scorer
from flywheel.curate.rules import ReviewPriority, parse_rules
from flywheel.errors import InvalidInput
from flywheel.records import utcnow
from flywheel.store import Store

__all__ = ["ReviewBatch", "boost_review_items", "eval_coverage", "rank_review_items", "select_review_batch"]


@dataclass
class ReviewBatch:
    """A cycle's review batch: the items its budget chose, and the rest."""

    cycle_id: str
    budget: int
    selected: int  # items in the batch
    pending: int  # of those, still waiting for a reviewer
    backlog: int  # the workload's other pending items: ranked, not queued
    reranked: int  # pending items whose priority changed when ranked again
    coverage: str  # which evaluation set the coverage term counted
    top: list[dict[str, Any]] = field(default_factory=list)  # the batch's first items

    def as_dict(self) -> dict[str, Any]:
        return {
            "budget": self.budget,
            "selected": self.selected,
            "pending": self.pending,
            "backlog": self.backlog,
            "reranked": self.reranked,
            "coverage": self.coverage,
            "top": self.top,
        }


def eval_coverage(
    store: Store, workload: str, dataset_id: str | None = None, *, standing: bool = True
) -> Coverage:
    """Evaluation items per tool and intent: the workload's standing evaluation
    set when there is one and ``standing``; else the eval split of ``dataset_id``
    (default: the workload's latest dataset), whose run also gives each tool's
    examples (for novelty)."""
    dataset = store.get_dataset(dataset_id) if dataset_id else store.latest_dataset(workload)
    recorded = ((dataset or {}).get("summary") or {}).get("eval_coverage") or {}
    examples = recorded.get("examples") or {}
    if standing:
        latest = store.latest_eval_set(workload)
        strata = (latest or {}).get("summary", {}).get("strata")
        if latest is not None and isinstance(strata, dict):
            return Coverage.of_strata(strata, f"standing eval set v{latest['number']}", examples)
    if dataset is None:
        return Coverage({}, None, "no eval set yet")
    tools = recorded.get("tools")
    if tools is None:  # a dataset curated before coverage was recorded: count its split
        tools = {}
        for row in store.dataset_examples(dataset["id"], "eval"):
            if row["kind"] == "sft":
                for call in row["target"].get("tool_calls") or [{"name": "(text)"}]:
                    tools[call["name"]] = tools.get(call["name"], 0) + 1
    return Coverage(tools, None, f"eval split of {dataset['id']}", examples)


def _weights(store: Store, workload: str, dataset_id: str | None) -> ReviewPriority:
    """The ``review_priority`` weights of the rules the dataset was curated with."""
    dataset = store.get_dataset(dataset_id) if dataset_id else store.latest_dataset(workload)
    if dataset is None or not dataset.get("rules"):
        return ReviewPriority()
    try:
        return parse_rules(dataset["rules"], name=f"the rules of {dataset['id']}").review_priority
    except InvalidInput:  # rules an older version accepted
        return ReviewPriority()


def rank_review_items(
    store: Store, workload: str, coverage: Coverage, weights: ReviewPriority | None = None
) -> int:
    """Score the workload's pending items again (against ``coverage``); the number
    whose priority or reason changed. Items stored without factors keep theirs."""
    score = Scorer(coverage, weights or ReviewPriority()).score_factors
    changed: list[tuple[str, float, str]] = []
    for page in store.iter_pending_review_factors(workload):
        for item_id, rule, priority, reason, factors in page:
            if not isinstance(factors, dict):
                continue
            new, why = score(factors, rule)
            if abs(new - priority) > 1e-9 or why != reason:
                changed.append((item_id, new, why))
    store.set_review_priorities(changed)
    return len(changed)


def select_review_batch(
    store: Store,
    workload: str,
    cycle_id: str,
    budget: int,
    *,
    dataset_id: str | None = None,
    standing: bool = True,
) -> ReviewBatch:
    """Rank the pending items again and mark the ``budget`` best as the cycle's
    batch. Once per cycle: a cycle that has a batch (a resumed cycle) keeps it."""
    coverage = eval_coverage(store, workload, dataset_id, standing=standing)
    reranked = 0
    counts = store.review_batch_counts(workload, cycle_id)
    if not any(n for state, n in counts.items() if state != "backlog"):
        reranked = rank_review_items(store, workload, coverage, _weights(store, workload, dataset_id))
        store.mark_review_batch(workload, cycle_id, budget)
        counts = store.review_batch_counts(workload, cycle_id)
    top = [
        {"task_id": i["task_id"], "priority": i["priority"], "reason": i["reason"]}
        for i in store.review_queue(workload, limit=5, cycle_id=cycle_id)
    ]
    selected = sum(n for state, n in counts.items() if state != "backlog")
    return ReviewBatch(
        cycle_id,
        budget,
        selected,
        counts.get("pending", 0),
        counts["backlog"],
        reranked,
        coverage.source,
        top,
    )


def boost_review_items(
    store: Store, workload: str, task_ids: Sequence[str], reason: str, weight: float = 1.0
) -> int:
    """Raise the review items of ``task_ids`` by ``weight`` (their ``boost``; a
    later boost replaces an earlier one), named by ``reason`` when it is their
    largest term. A task without a review item gets one (rule ``boost``); an item
    a reviewer already decided is left alone. The number of items boosted."""
    if weight < 0:
        raise InvalidInput(f"a boost's weight must be >= 0, got {weight}")
    wanted = list(dict.fromkeys(task_ids))
    if not wanted:
        return 0
    latest = store.latest_dataset(workload)
    dataset_id = latest["id"] if latest else None
    score = Scorer(eval_coverage(store, workload, dataset_id), _weights(store, workload, dataset_id))
    existing = store.review_items_of_tasks(wanted)
    updates: list[tuple[str, float, str, dict[str, Any]]] = []
    created: list[dict[str, Any]] = []
    now = utcnow()
    for task_id in wanted:
        item = existing.get(task_id)
        if item is not None and (item["state"] != "pending" or item["workload"] != workload):
            continue
        if item is None:
            factors = _task_factors(store, task_id)
            if factors is None:  # no such task
                continue
        elif item["factors"] is None:  # stored before factors were kept: its priority stays a term
            factors = {"base": [item["priority"], item["reason"]]}
        else:
            factors = dict(item["factors"])
        factors["boost"], factors["boost_reason"] = weight, reason
        rule = item["rule"] if item is not None else "boost"
        priority, why = score.score_factors(factors, rule)
        if item is None:
            created.append(
                {
                    "id": f"review-{task_id}",
                    "task_id": task_id,
                    "workload": workload,
                    "reason": why,
                    "rule": rule,
                    "priority": priority,
                    "state": "pending",
                    "reviewer": None,
                    "dataset_id": dataset_id,
                    "created_at": now,
                    "updated_at": now,
                    "factors": factors,
                    "cycle_id": None,
                }
            )
        else:
            updates.append((item["id"], priority, why, factors))
    store.set_review_factors(updates)
    store.save_review_items(created)
    return len(updates) + len(created)


def _task_factors(store: Store, task_id: str) -> dict[str, Any] | None:
    """The factors of a task that has no review item: its confidence and intent
    (its answer is an eval item already: no coverage to add)."""
    from flywheel.errors import NotFound

    try:
        task = store.get_task(task_id)
    except NotFound:
        return None
    metadata = task.metadata or {}
    intent = metadata.get("intent") or metadata.get("category")
    return {
        "confidence": task.confidence,
        "signal": None,
        "margin": None,
        "judge": None,
        "tools": None,
        "intent": None if intent is None else str(intent)[:150],
    }

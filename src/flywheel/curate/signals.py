"""The built-in signals: named, documented predicates over a task (see
``rules.SIGNALS`` for the list and what each means), and the evaluation of a
rule condition built from them."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from flywheel.curate.rules import Rule, _duration_hours
from flywheel.records import CurationTask, Task

__all__ = ["Predicate", "TaskFacts", "evaluate", "facts", "first_match", "predicate", "rule_matcher"]


@dataclass
class TaskFacts:
    """What the signals need to know about a task, computed once."""

    task: Task | CurationTask
    tool_errors: int
    retries: int  # tool calls that repeat a tool right after it failed
    fallback: bool
    negative: bool
    positive: bool
    edit_after_hours: float | None  # first edit's delay after the task ended
    corrected: bool
    percentiles: dict[str, float]


def facts(task: Task | CurationTask, percentiles: dict[str, float]) -> TaskFacts:
    tool_errors = retries = 0
    fallback = False
    failed_tools: set[str] = set()
    if isinstance(task, CurationTask):  # summarised by the store: later attempts count as retries
        tool_errors, retries, fallback = task.tool_errors, task.retries, task.fallback
    for step in task.steps if isinstance(task, Task) else ():
        if step.kind != "tool_call":
            continue
        if step.data.get("fallback"):
            fallback = True
        if (step.data.get("attempt") or 1) > 1 or step.name in failed_tools:
            retries += 1
        if step.error:
            tool_errors += 1
            failed_tools.add(step.name or "")
        else:
            failed_tools.discard(step.name or "")
    negative = positive = False
    edit_after: float | None = None
    for fb in task.feedback:
        if fb.get("thumbs") == -1 or (fb.get("rating") or 3) <= 2 or fb.get("retried") or fb.get("abandoned"):
            negative = True
        if fb.get("thumbs") == 1 or (fb.get("rating") or 0) >= 4:
            positive = True
        if fb.get("edited") and task.ended_at is not None:
            hours = (fb["at"] - task.ended_at) / timedelta(hours=1)
            edit_after = hours if edit_after is None else min(edit_after, hours)
    return TaskFacts(
        task=task,
        tool_errors=tool_errors,
        retries=retries,
        fallback=fallback,
        negative=negative,
        positive=positive,
        edit_after_hours=edit_after,
        corrected=bool(task.corrections),
        percentiles=percentiles,
    )


Predicate = Callable[[TaskFacts], bool]


def _signal(name: str, param: Any) -> Predicate:
    """The predicate of one signal, its parameter bound."""
    if name == "retries":
        most = param or 0
        return lambda f: f.retries > most
    if name == "fallback_tool_used":
        return lambda f: f.fallback
    if name == "human_edit_within":
        limit = _duration_hours(param if param is not None else "24h")
        return lambda f: f.edit_after_hours is not None and f.edit_after_hours <= limit
    if name == "confidence_below":
        below = 0.5 if param is None else param
        return lambda f: f.task.confidence is not None and f.task.confidence < below
    if name == "negative_feedback":
        return lambda f: f.negative
    if name == "positive_feedback":
        return lambda f: f.positive
    if name == "tool_error":
        return lambda f: f.tool_errors > 0
    if name == "slow":
        percentile = param or "p95"

        def slow(f: TaskFacts) -> bool:
            threshold = f.percentiles.get(percentile) if isinstance(percentile, str) else float(percentile)
            return threshold is not None and f.task.duration_ms is not None and f.task.duration_ms > threshold

        return slow
    if name == "corrected":
        return lambda f: f.corrected
    if name == "clean_success":
        return lambda f: f.task.success is True and f.tool_errors == 0 and not f.negative
    if name == "failed":
        return lambda f: f.task.success is False
    raise AssertionError(f"signal {name!r} is validated but not implemented")  # pragma: no cover


def predicate(condition: Any) -> Predicate:
    """A rule condition (a signal, ``{signal: parameter}``, or all/any/not of
    conditions) made into one function, built once per run."""
    if isinstance(condition, str):
        return _signal(condition, None)
    key, value = next(iter(condition.items()))
    if key in ("all", "any"):
        parts = tuple(predicate(c) for c in value)
        # plain loops: ``all(p(f) for p in parts)`` would make a generator per task
        # and condition (a million tasks are matched per run)
        if key == "all":

            def every(f: TaskFacts) -> bool:
                for part in parts:  # noqa: SIM110
                    if not part(f):
                        return False
                return True

            return every

        def some(f: TaskFacts) -> bool:
            for part in parts:  # noqa: SIM110
                if part(f):
                    return True
            return False

        return some
    if key == "not":
        inner = predicate(value)
        return lambda f: not inner(f)
    return _signal(key, None if value is True else value)


def evaluate(condition: Any, f: TaskFacts) -> bool:
    return predicate(condition)(f)


def rule_matcher(rules: list[Rule]) -> Callable[[TaskFacts], Rule | None]:
    """The first rule whose condition holds, by predicates built once."""
    compiled = [(predicate(rule.when), rule) for rule in rules]

    def match(f: TaskFacts) -> Rule | None:
        for holds, rule in compiled:
            if holds(f):
                return rule
        return None

    return match


def first_match(rules: list[Rule], f: TaskFacts) -> Rule | None:
    return rule_matcher(rules)(f)

"""The built-in signals: named, documented predicates over a task (see
``rules.SIGNALS`` for the list and what each means), and the evaluation of a
rule condition built from them."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from flywheel.curate.rules import Rule, _duration_hours
from flywheel.records import Task

__all__ = ["TaskFacts", "evaluate", "facts", "first_match"]


@dataclass
class TaskFacts:
    """What the signals need to know about a task, computed once."""

    task: Task
    tool_errors: int
    retries: int  # tool calls that repeat a tool right after it failed
    fallback: bool
    negative: bool
    positive: bool
    edit_after_hours: float | None  # first edit's delay after the task ended
    corrected: bool
    percentiles: dict[str, float]


def facts(task: Task, percentiles: dict[str, float]) -> TaskFacts:
    tool_errors = retries = 0
    fallback = False
    failed_tools: set[str] = set()
    summary = task.metadata.get("_tools") if isinstance(task.metadata, dict) else None
    if summary is not None:  # aggregated by the store (lean loading)
        tool_errors, retries, fallback = summary
    for step in task.steps if summary is None else ():
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


def _signal(name: str, param: Any, f: TaskFacts) -> bool:
    task = f.task
    if name == "retries":
        return f.retries > (param or 0)
    if name == "fallback_tool_used":
        return f.fallback
    if name == "human_edit_within":
        limit = _duration_hours(param if param is not None else "24h")
        return f.edit_after_hours is not None and f.edit_after_hours <= limit
    if name == "confidence_below":
        return task.confidence is not None and task.confidence < (0.5 if param is None else param)
    if name == "negative_feedback":
        return f.negative
    if name == "positive_feedback":
        return f.positive
    if name == "tool_error":
        return f.tool_errors > 0
    if name == "slow":
        threshold = f.percentiles.get(param or "p95") if isinstance(param or "p95", str) else float(param)
        return threshold is not None and task.duration_ms is not None and task.duration_ms > threshold
    if name == "corrected":
        return f.corrected
    if name == "clean_success":
        return task.success is True and f.tool_errors == 0 and not f.negative
    if name == "failed":
        return task.success is False
    raise AssertionError(f"signal {name!r} is validated but not implemented")  # pragma: no cover


def evaluate(condition: Any, f: TaskFacts) -> bool:
    if isinstance(condition, str):
        return _signal(condition, None, f)
    key, value = next(iter(condition.items()))
    if key == "all":
        return all(evaluate(c, f) for c in value)
    if key == "any":
        return any(evaluate(c, f) for c in value)
    if key == "not":
        return not evaluate(value, f)
    return _signal(key, None if value is True else value, f)


def first_match(rules: list[Rule], f: TaskFacts) -> Rule | None:
    return next((rule for rule in rules if evaluate(rule.when, f)), None)

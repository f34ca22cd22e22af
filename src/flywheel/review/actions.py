"""The review actions (see the package docstring)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from sqlalchemy import select

from flywheel.curate.examples import schema_problem
from flywheel.errors import InvalidInput
from flywheel.ingest import Ingestor
from flywheel.records import Task, utcnow
from flywheel.review.labels import label_id, store_label
from flywheel.store import Store
from flywheel.store import tables as t

__all__ = ["ACTIONS", "ReviewOutcome", "next_item", "review", "tools_of"]

#: action -> the review item's state afterwards (None: unchanged, an annotation only)
ACTIONS: dict[str, str | None] = {
    "approve": "approved",
    "reject": "rejected",
    "correct_output": "corrected",
    "correct_tool_call": "corrected",
    "preference": None,
    "adoption": None,
    "knowledge_relevance": None,
    "missing_knowledge": None,
}


@dataclass
class ReviewOutcome:
    label_id: str
    task_id: str
    action: str
    state: str | None
    stored: bool = True  # false: the same action was stored before (a resubmitted form)


def tools_of(task: Task) -> dict[str, dict[str, Any]]:
    """The tools the task's model calls were offered: name -> JSON Schema of the arguments."""
    offered: dict[str, dict[str, Any]] = {}
    for step in task.steps:
        tools = step.data.get("tools") if step.kind == "llm_call" else None
        for tool in tools if isinstance(tools, list) else []:  # stored as captured: any JSON
            spec = tool.get("function", tool) if isinstance(tool, dict) else None
            if isinstance(spec, dict) and isinstance(spec.get("name"), str) and spec["name"]:
                parameters = spec.get("parameters")
                offered[spec["name"]] = parameters if isinstance(parameters, dict) else {}
    return offered


def _tool_calls(task: Task, calls: Any) -> list[dict[str, Any]]:
    if not isinstance(calls, list) or not calls:
        raise InvalidInput("tool_calls must be a non-empty list of {name, arguments}")
    offered = tools_of(task)
    checked = []
    for i, call in enumerate(calls):
        if not isinstance(call, dict) or not isinstance(call.get("name"), str):
            raise InvalidInput(f"tool call {i + 1}: give an object with a string 'name'")
        arguments = call.get("arguments", {})
        if not isinstance(arguments, dict):
            raise InvalidInput(f"tool call {i + 1}: 'arguments' must be a JSON object")
        if offered and call["name"] not in offered:
            raise InvalidInput(
                f"tool call {i + 1}: {call['name']!r} is not a tool this task offered; "
                f"offered: {', '.join(sorted(offered))}"
            )
        problem = schema_problem(arguments, offered.get(call["name"], {}))
        if problem:
            raise InvalidInput(f"tool call {i + 1} ({call['name']}): {problem}")
        checked.append({"name": call["name"], "arguments": arguments})
    return checked


def _event(task: Task, action: str, data: dict[str, Any], author: str) -> dict[str, Any]:
    base = {"task_id": task.id}
    if action == "correct_output":
        if data.get("output") in (None, ""):
            raise InvalidInput("give the corrected output")
        return {**base, "type": "correction", "author": author, "output": data["output"]}
    if action == "correct_tool_call":
        calls = _tool_calls(task, data.get("tool_calls"))
        return {**base, "type": "correction", "author": author, "tool_calls": calls}
    if action in ("approve", "reject"):
        rationale = str(data.get("rationale") or "").strip() or f"{action}d in review"
        annotation: dict[str, Any] = {
            "kind": "adoption",
            "adopted": action == "approve",
            "rationale": rationale,
        }
    else:
        annotation = {"kind": action, **{k: v for k, v in data.items() if k != "kind"}}
    return {**base, "type": "annotation", "author": author, "annotation": annotation}


def review(
    store: Store,
    ingestor: Ingestor,
    task_id: str,
    action: str,
    data: dict[str, Any] | None = None,
    *,
    reviewer: str,
    nonce: str | None = None,
) -> ReviewOutcome:
    """Apply one review action to a task: the label, the review item's state and the
    audit event in one transaction. The label's id derives from the reviewer, the
    task, the action's content and ``nonce`` (the page's form id): the same action
    sent twice is stored once (``flywheel.review.labels``). Raises InvalidInput on
    bad input, NotFound for an unknown task."""
    if action not in ACTIONS:
        raise InvalidInput(f"unknown review action {action!r}; known: {', '.join(ACTIONS)}")
    task = store.get_task(task_id)
    event = _event(task, action, dict(data or {}), reviewer)
    event["id"] = label_id(reviewer, task_id, event, nonce)
    event["at"] = utcnow().isoformat()
    state = ACTIONS[action]
    label = store_label(store, ingestor, event, actor=reviewer, action=f"review.{action}", state=state)
    return ReviewOutcome(label.id, task_id, action, state, stored=label.stored)


def next_item(store: Store, workload: str | None = None, *, skip: str | None = None) -> dict[str, Any] | None:
    """The highest-priority pending review item (after ``skip``, a task id)."""
    c = t.review_items.c
    query = select(t.review_items).where(c.state == "pending").order_by(c.priority.desc(), c.created_at, c.id)
    if workload:
        query = query.where(c.workload == workload)
    if skip:
        query = query.where(c.task_id != skip)
    with store.engine.connect() as conn:
        row = conn.execute(query.limit(1)).mappings().first()
    return dict(row) if row else None

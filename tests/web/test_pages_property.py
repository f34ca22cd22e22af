"""Pages never answer 500 on stored data: tasks whose steps hold arbitrary JSON, stored
through the real ingestion path, render on the task page, the task list and the
review queue, with their content escaped."""

from __future__ import annotations

import itertools
import json
import uuid
from typing import Any

import hypothesis
import pytest
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, given
from hypothesis import strategies as st
from tests.helpers import now

from flywheel.ingest import Ingestor
from flywheel.records import utcnow
from flywheel.server import create_app
from flywheel.store import tables as t

# What a JSON column can hold (no NUL: PostgreSQL's jsonb refuses it; integers a
# JSON parser keeps exact), plus the shapes the pages dig into, with arbitrary
# values at every level.
text = st.text(st.characters(codec="utf-8", exclude_characters="\x00"), max_size=12)
scalars = (
    st.none()
    | st.booleans()
    | st.integers(-(2**53), 2**53)
    | st.floats(allow_nan=False, allow_infinity=False)
    | text
)
values = st.recursive(
    scalars,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(text, inner, max_size=3),
    max_leaves=8,
)
column_values = values  # a whole column's value may be a bare number too
roles = st.sampled_from(["assistant", "user", "system", "tool", "ai", "Assistant"]) | values
call = st.one_of(
    st.fixed_dictionaries(
        {"id": values, "type": st.just("function")},
        optional={
            "function": st.fixed_dictionaries({}, optional={"name": values, "arguments": values | text})
        },
    ),
    st.fixed_dictionaries({}, optional={"name": values, "arguments": values, "args": values}),
    values,
)
part = st.fixed_dictionaries(
    {
        "type": st.sampled_from(["text", "tool_call", "tool_call_response", "reasoning", "output_text"])
        | values
    },
    optional={"content": values, "text": values, "name": values, "arguments": values, "id": values},
)
message = st.fixed_dictionaries(
    {"role": roles},
    optional={
        "content": values | st.lists(part | values, max_size=3),
        "tool_calls": st.lists(call, max_size=3) | values,
        "function_call": call,
        "parts": st.lists(part, max_size=3) | values,
    },
)
completion = st.fixed_dictionaries(
    {
        "choices": st.lists(
            st.fixed_dictionaries({}, optional={"message": message | values, "text": values}) | values,
            max_size=2,
        )
        | values
    }
)
replies = st.one_of(
    values, message, completion, st.lists(message | values, max_size=4), st.lists(call, max_size=3)
)
tools = st.lists(
    st.fixed_dictionaries(
        {
            "type": st.just("function"),
            "function": st.fixed_dictionaries({"name": values, "parameters": values}),
        }
    )
    | st.fixed_dictionaries({"name": values, "parameters": values})
    | values,
    max_size=3,
)

# The marker goes into one field, in one of the shapes that field is read in.
WRAPS = [
    lambda m: m,
    lambda m: [1, {"deep": [m]}],
    lambda m: {"role": "assistant", "content": m},
    lambda m: {
        "choices": [
            {
                "message": {
                    "role": "assistant",
                    "content": None,
                    "tool_calls": [{"function": {"name": m, "arguments": "{}"}}],
                }
            }
        ]
    },
    lambda m: [
        {"role": "user", "content": "q"},
        {"role": "assistant", "parts": [{"type": "text", "content": m}]},
    ],
    lambda m: {
        "role": "assistant",
        "tool_calls": [{"function": {"name": "f", "arguments": json.dumps({"x": m})}}],
    },
    lambda m: [{"type": "tool_call", "name": "f", "arguments": {"x": m}}],
]
JSON_FIELDS = [
    "input",
    "output",
    "metadata",
    "messages",
    "tools",
    "response",
    "arguments",
    "tool_output",
    "edited_output",
    "correction",
    "preference",
]
TEXT_FIELDS = ["reasoning", "query", "document", "step_error", "task_error", "comment"]


_made = itertools.count()
_run = uuid.uuid4().hex[:8]


def fresh_id() -> str:
    """A unique id that draws nothing from ``random`` (hypothesis forbids that in a strategy)."""
    return f"p{next(_made):06d}-{_run}"


def step(kind: str, task_id: str, seq: int, **data: Any) -> dict[str, Any]:
    at = now()
    return {
        "type": kind,
        "id": fresh_id(),
        "task_id": task_id,
        "seq": seq,
        "started_at": at,
        "ended_at": at,
        **data,
    }


@st.composite
def tasks(draw: st.DrawFn) -> tuple[list[dict[str, Any]], str, str]:
    task_id, at = fresh_id(), now()
    # letters only, so that no redaction detector takes it for a number
    marker = "<i>mark-" + "".join(chr(ord("a") + int(c)) for c in task_id[1:7]) + "</i>"
    where = draw(st.sampled_from(JSON_FIELDS + TEXT_FIELDS))
    wrapped = draw(st.sampled_from(WRAPS))(marker)

    def field(name: str, strategy: st.SearchStrategy[Any]) -> Any:
        return (wrapped if name in JSON_FIELDS else marker) if name == where else draw(strategy)

    steps: list[dict[str, Any]] = []
    for seq, kind in enumerate(
        draw(
            st.lists(
                st.sampled_from(["llm_call", "tool_call", "file_access", "reasoning", "retrieval"]),
                max_size=5,
            )
        ),
        1,
    ):
        error = field("step_error", st.none() | text)
        if kind == "llm_call":
            data = {
                "model": "m",
                "messages": draw(st.lists(message | values, max_size=3)),
                "tools": draw(st.none() | tools),
                "response": draw(replies),
            }
        elif kind == "tool_call":
            data = {
                "name": "lookup",
                "arguments": draw(values),
                "output": draw(values),
                "attempt": draw(st.integers(1, 3)),
            }
        elif kind == "file_access":
            data = {
                "path": "/tmp/x",
                "mode": draw(st.sampled_from(["read", "write", "modify"])),
                "bytes": draw(st.none() | st.integers(0, 10**6)),
            }
        elif kind == "reasoning":
            data = {"text": draw(text)}
        else:
            document = st.fixed_dictionaries(
                {"content": text},
                optional={
                    "id": st.none() | text,
                    "score": st.none() | st.floats(allow_nan=False, allow_infinity=False),
                    "source": st.none() | text,
                },
            )
            data = {"query": draw(text), "documents": draw(st.lists(document, max_size=3))}
        steps.append(step(kind, task_id, seq, error=error, **data))
    # the marked field, in a step of its own kind, whatever was drawn above
    seq = len(steps) + 1
    if where in ("messages", "tools", "response"):
        data = {"model": "m", "messages": [], "tools": None, "response": None}
        data[where] = [wrapped] if where != "response" else wrapped
        steps.append(step("llm_call", task_id, seq, **data))
    elif where in ("arguments", "tool_output"):
        steps.append(
            step(
                "tool_call",
                task_id,
                seq,
                name="lookup",
                **{"output" if where == "tool_output" else where: wrapped},
            )
        )
    elif where == "reasoning":
        steps.append(step("reasoning", task_id, seq, text=marker))
    elif where in ("query", "document"):
        documents = [{"id": "d1", "content": marker}] if where == "document" else []
        steps.append(
            step("retrieval", task_id, seq, query=marker if where == "query" else "q", documents=documents)
        )
    elif where == "step_error":
        steps.append(step("reasoning", task_id, seq, text="t", error=marker))

    finished = {
        "type": "task_finished",
        "id": task_id,
        "workload": "prop",
        "session_id": "s",
        "input": field("input", column_values),
        "output": field("output", column_values),
        "metadata": {"k": wrapped}
        if where == "metadata"
        else draw(st.dictionaries(text, values, max_size=3)),
        "error": field("task_error", st.none() | text),
        "success": draw(st.none() | st.booleans()),
        "started_at": at,
        "ended_at": at,
    }
    labels: list[dict[str, Any]] = [
        {
            "type": "feedback",
            "id": fresh_id(),
            "task_id": task_id,
            "thumbs": -1,
            "comment": field("comment", st.none() | text),
            "edited": True,
            "edited_output": field("edited_output", column_values),
            "at": at,
        },
        {
            "type": "correction",
            "id": fresh_id(),
            "task_id": task_id,
            "output": field("correction", column_values) or "x",
            "at": at,
        },
        {
            "type": "annotation",
            "id": fresh_id(),
            "task_id": task_id,
            "annotation": {
                "kind": "preference",
                "response_a": field("preference", values),
                "response_b": draw(values),
                "preferred": "a",
            },
            "at": at,
        },
    ]
    return [finished, *steps, *labels], task_id, marker


@pytest.fixture
def client(settings, store):
    with TestClient(create_app(settings, store=store), base_url="http://localhost") as client:
        key, _ = store.create_key("ana", ["review"])
        client.headers["Authorization"] = f"Bearer {key}"
        yield client


@hypothesis.settings(
    max_examples=60,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(case=tasks())
def test_any_stored_task_renders_on_every_page_with_its_content_escaped(client, store, settings, case):
    events, task_id, marker = case
    result = Ingestor(store, settings).ingest(events)
    assert not result.rejected, result.rejected
    with store.engine.begin() as conn:  # the only pending item: the queue page lists it
        conn.execute(t.review_items.update().values(state="approved"))
        conn.execute(
            t.review_items.insert(),
            {
                "id": fresh_id(),
                "task_id": task_id,
                "workload": "prop",
                "reason": marker,
                "rule": "low_confidence",
                "priority": 1.0,
                "state": "pending",
                "created_at": utcnow(),
                "updated_at": utcnow(),
            },
        )
    escaped = marker.replace("<", "&lt;").replace(">", "&gt;")
    for path in (f"/ui/tasks/{task_id}", f"/ui/tasks/{task_id}?queue=prop"):
        page = client.get(path)
        assert page.status_code == 200, page.text[-2000:]
        assert escaped in page.text and marker not in page.text
    listed = client.get("/ui/tasks?workload=prop")
    assert listed.status_code == 200 and f"/ui/tasks/{task_id}" in listed.text
    queue = client.get("/ui/review?workload=prop")
    assert queue.status_code == 200 and f"/ui/tasks/{task_id}?queue=prop" in queue.text
    assert marker not in queue.text


def test_a_task_whose_output_is_a_number_renders(client, store, settings):
    task_id, at = fresh_id(), now()
    finished = {"type": "task_finished", "id": task_id, "workload": "prop", "session_id": "s"}
    events = [{**finished, "input": 7, "output": 42, "success": True, "started_at": at, "ended_at": at}]
    assert not Ingestor(store, settings).ingest(events).rejected
    page = client.get(f"/ui/tasks/{task_id}")
    assert page.status_code == 200 and '<pre class="content" id="final-output">42</pre>' in page.text

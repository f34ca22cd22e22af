"""A corpus of bad inputs through the real server, on both databases.

Per case: the answer's status, each bad event's error (index, field, what is
wrong), and that every good event sent beside it is stored. A bad event is
that event's error; only a body that is not a batch at all is refused whole,
and never with a 5xx.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from typing import Any

import orjson
import pytest
from tests.helpers import now, task_events
from tests.server.conftest import auth

from flywheel.records import new_id

Event = dict[str, Any]


def _nested(depth: int) -> str:
    """A placeholder for a list nested ``depth`` deep (built as text: too deep for
    the encoders)."""
    return f"@@nest:{depth}@@"


def _encode(event: Event) -> bytes:
    """The event as JSON text, placeholders expanded; NaN and infinities written the
    way Python writes them (NaN, Infinity), which strict JSON readers refuse."""
    text = json.dumps(event).encode()
    return re.sub(
        rb'"@@nest:(\d+)@@"', lambda m: b"[" * int(m.group(1)) + b"0" + b"]" * int(m.group(1)), text
    )


def _step(task_id: str, **fields: Any) -> Event:
    return {
        "type": "tool_call",
        "id": new_id(),
        "task_id": task_id,
        "name": "lookup",
        "started_at": now(),
        **fields,
    }


def _raw(text: str) -> Callable[[str], bytes]:
    """A bad event written as JSON text (what the encoders will not write)."""

    def build(task_id: str) -> bytes:
        return text.replace("TASK", task_id).replace("NOW", now()).replace("ID", new_id()).encode()

    return build


def _event(make: Callable[[str], Event]) -> Callable[[str], bytes]:
    return lambda task_id: _encode(make(task_id))


#: name, the bad event (built from the task id of its good neighbours), the
#: field its error names, and words its message holds.
CASES: list[tuple[str, Callable[[str], bytes], str, str]] = [
    (
        "timestamp_before_year_1_in_utc",
        _event(lambda t: _step(t, started_at="0001-01-01T00:00:00+05:00")),
        "tool_call.started_at",
        "is out of range: in UTC it falls outside years 1 to 9999",
    ),
    (
        "timestamp_after_year_9999_in_utc",
        _event(lambda t: _step(t, started_at="9999-12-31T23:59:59-05:00")),
        "tool_call.started_at",
        "is out of range",
    ),
    (
        "timestamp_in_the_future",
        _event(lambda t: _step(t, started_at="9999-12-31T23:59:59Z")),
        "tool_call.started_at",
        "is in the future",
    ),
    ("nested_201_deep", _event(lambda t: _step(t, arguments=_nested(200))), "arguments", "200 levels"),
    ("nested_255_deep", _event(lambda t: _step(t, arguments=_nested(255))), "arguments", "200 levels"),
    ("nested_600_deep", _event(lambda t: _step(t, output=_nested(600))), "output", "200 levels"),
    ("nested_1024_deep", _event(lambda t: _step(t, output=_nested(1020))), "output", "200 levels"),
    (
        "integer_beyond_64_bits",
        _event(lambda t: _step(t, arguments={"n": 2**70})),
        "arguments.n",
        "integer 1180591620717411303424 is outside 64 bits",
    ),
    (
        "negative_integer_beyond_64_bits",
        _event(lambda t: _step(t, output=[1, -(2**63) - 1])),
        "output.1",
        "is outside 64 bits",
    ),
    (
        "token_count_beyond_64_bits",
        _event(
            lambda t: {
                "type": "llm_call",
                "id": new_id(),
                "task_id": t,
                "model": "m",
                "started_at": now(),
                "input_tokens": 2**64,
            }
        ),
        "input_tokens",
        "is outside 64 bits",
    ),
    ("seq_of_2_to_the_63", _event(lambda t: _step(t, seq=2**63)), "tool_call.seq", "2147483647"),
    ("seq_of_2_to_the_31", _event(lambda t: _step(t, seq=2**31)), "tool_call.seq", "2147483647"),
    ("seq_negative", _event(lambda t: _step(t, seq=-1)), "tool_call.seq", "greater than or equal to 0"),
    ("seq_true", _event(lambda t: _step(t, seq=True)), "tool_call.seq", "true is a boolean"),
    (
        "nan_in_content",
        _raw(
            '{"type": "tool_call", "id": "ID", "task_id": "TASK", "name": "x", "started_at": "NOW", '
            '"arguments": {"x": NaN}}'
        ),
        "arguments.x",
        "nan is not a number JSON can hold",
    ),
    (
        "nan_confidence",
        _raw(
            '{"type": "task_finished", "id": "ID", "workload": "w", "session_id": "s", '
            '"started_at": "NOW", "ended_at": "NOW", "success": true, "confidence": NaN}'
        ),
        "confidence",
        "nan is not a number JSON can hold",
    ),
    (
        "infinity",
        _raw(
            '{"type": "tool_call", "id": "ID", "task_id": "TASK", "name": "x", "started_at": "NOW", '
            '"output": -Infinity}'
        ),
        "output",
        "-inf is not a number JSON can hold",
    ),
    (
        "number_overflowing_to_infinity",
        _raw(
            '{"type": "tool_call", "id": "ID", "task_id": "TASK", "name": "x", "started_at": "NOW", '
            '"output": 1e400}'
        ),
        "output",
        "inf is not a number JSON can hold",
    ),
    (
        "lone_surrogate",
        _raw(
            '{"type": "reasoning", "id": "ID", "task_id": "TASK", "started_at": "NOW", '
            '"text": "half \\ud83d of a pair"}'
        ),
        "text",
        "lone surrogate",
    ),
    (
        "thumbs_true",
        _event(lambda t: {"type": "feedback", "id": new_id(), "task_id": t, "thumbs": True, "at": now()}),
        "feedback.thumbs",
        "true is a boolean; a number is expected here",
    ),
    (
        "rating_true",
        _event(lambda t: {"type": "feedback", "id": new_id(), "task_id": t, "rating": True, "at": now()}),
        "feedback.rating",
        "true is a boolean",
    ),
    (
        "thumbs_zero",
        _event(lambda t: {"type": "feedback", "id": new_id(), "task_id": t, "thumbs": 0, "at": now()}),
        "feedback.thumbs",
        "Input should be -1 or 1",
    ),
    (
        "confidence_false",
        _event(
            lambda t: {
                "type": "task_finished",
                "id": new_id(),
                "workload": "w",
                "session_id": "s",
                "started_at": now(),
                "ended_at": now(),
                "success": True,
                "confidence": False,
            }
        ),
        "task_finished.confidence",
        "false is a boolean",
    ),
    ("event_null", _raw("null"), "(event)", "valid dictionary"),
    ("event_number", _raw("42"), "(event)", "valid dictionary"),
    ("event_list", _raw("[]"), "(event)", "valid dictionary"),
    ("event_empty", _raw("{}"), "(event)", "Unable to extract tag using discriminator 'type'"),
    (
        "unknown_type",
        _raw('{"type": "nope", "id": "ID"}'),
        "(event)",
        "does not match any of the expected tags",
    ),
    (
        "nul_in_session_id",
        _event(
            lambda t: {
                "type": "task_started",
                "id": new_id(),
                "workload": "w",
                "session_id": "s\x00",
                "started_at": now(),
            }
        ),
        "task_started.session_id",
        "should match pattern",
    ),
    (
        "workload_too_long",
        _event(
            lambda t: {
                "type": "task_started",
                "id": new_id(),
                "workload": "w" * 201,
                "session_id": "s",
                "started_at": now(),
            }
        ),
        "task_started.workload",
        "at most 200 characters",
    ),
]


def _batch(bad: bytes, task_events_: list[Event]) -> bytes:
    """The good events with the bad one second (index 1)."""
    parts = [orjson.dumps(e) for e in task_events_]
    parts.insert(1, bad)
    return b'{"events": [' + b",".join(parts) + b"]}"


@pytest.mark.parametrize(("name", "bad", "field", "words"), CASES, ids=[c[0] for c in CASES])
def test_a_bad_event_is_its_own_error_and_its_neighbours_are_stored(
    client, store, keys, name, bad, field, words
):
    good = task_events(steps=2)
    task_id = good[0]["id"]
    response = client.post("/v1/events", content=_batch(bad(task_id), good), headers=auth(keys["ingest"]))
    assert response.status_code == 200, response.text
    body = response.json()
    assert (body["received"], body["stored"], body["duplicates"]) == (5, 4, 0)
    [error] = body["rejected"]
    assert (error["index"], error["field"]) == (1, field), error
    assert words in error["message"], error
    task = store.get_task(task_id)
    assert task.output == "answer" and task.input == "question"
    assert [s.id for s in task.steps] == [good[1]["id"], good[2]["id"]]


def test_a_batch_of_only_bad_events_is_422_with_each_error(client, keys):
    task_id = new_id()
    bads = [case[1](task_id) for case in CASES[:6]]
    response = client.post("/v1/events", content=b"[" + b",".join(bads) + b"]", headers=auth(keys["ingest"]))
    assert response.status_code == 422
    assert [e["index"] for e in response.json()["rejected"]] == list(range(6))


@pytest.mark.parametrize("seq", [0, 2**31 - 1])
def test_the_largest_seq_the_column_holds_is_stored(client, store, keys, seq):
    events = task_events(steps=1)
    events[1]["seq"] = seq
    response = client.post("/v1/events", json=events, headers=auth(keys["ingest"]))
    assert response.json()["stored"] == 3
    assert store.get_task(events[0]["id"]).steps[0].seq == seq


def test_a_nul_in_a_name_is_stored_as_a_replacement_character(client, store, keys):
    events = task_events(workload="support\x00triage", steps=1)
    response = client.post("/v1/events", json=events, headers=auth(keys["ingest"]))
    assert response.status_code == 200, response.text
    assert response.json()["stored"] == 3
    assert store.get_task(events[0]["id"]).workload == "support\ufffdtriage"


def test_integers_at_the_edges_of_64_bits_are_stored_exactly(client, store, keys):
    events = task_events(steps=1)
    events[1]["output"] = {"min": -(2**63), "max": 2**64 - 1}
    response = client.post("/v1/events", content=_encode({"events": events}), headers=auth(keys["ingest"]))
    assert response.json()["stored"] == 3, response.text
    assert store.get_task(events[0]["id"]).steps[0].data["output"] == {"min": -(2**63), "max": 2**64 - 1}


@pytest.mark.parametrize(
    ("body", "message"),
    [
        (b"null", 'the body must be {"events": [...]} or a JSON array of events'),
        (b"{}", 'the body must be {"events": [...]} or a JSON array of events'),
        (b'{"events": null}', 'the body must be {"events": [...]} or a JSON array of events'),
        (b'{"events": {}}', 'the body must be {"events": [...]} or a JSON array of events'),
        (b'"events"', 'the body must be {"events": [...]} or a JSON array of events'),
        (b"[", "the body is not valid UTF-8 JSON"),
        (b"", "the body is not valid UTF-8 JSON"),
        (b"\xff\xfe\xfa", "the body is not valid UTF-8 JSON"),
        (b"[" * 5000 + b"]" * 5000, "the body nests JSON too deep to read"),
    ],
    ids=[
        "null",
        "empty_object",
        "events_null",
        "events_object",
        "string",
        "cut_short",
        "empty",
        "not_utf8",
        "nested_5000_deep",
    ],
)
def test_a_body_that_is_not_a_batch_is_400_with_what_is_wrong(client, keys, body, message):
    response = client.post("/v1/events", content=body, headers=auth(keys["ingest"]))
    assert response.status_code == 400, response.text
    assert response.json()["error"]["type"] == "InvalidInput"
    assert message in response.json()["error"]["message"]


OTLP_BODIES = [
    (b"[]", "it must be a JSON object"),
    (b"null", "it must be a JSON object"),
    (b'"spans"', "it must be a JSON object"),
    (b"{", "the body is not an OTLP/JSON"),
    (b'{"resourceSpans": [1]}', "the body is not an OTLP/JSON"),
    (b'{"resourceSpans": [{"scopeSpans": [{"spans": [1, "x", null]}]}]}', "the body is not an OTLP/JSON"),
    (b'{"resourceSpans": {"a": 1}}', "the body is not an OTLP/JSON"),
    (
        b'{"resourceSpans": [{"scopeSpans": [{"spans": [{"attributes": [7]}]}]}]}',
        "the body is not an OTLP/JSON",
    ),
    (
        b'{"resourceSpans": [{"scopeSpans": [{"spans": [{"attributes": [{"key": "k", "value": '
        + b'{"arrayValue": {"values": [' * 400
        + b"{}"
        + b"]}}" * 400
        + b"}]}]}]}]}",
        "the body is not an OTLP/JSON",
    ),
]


@pytest.mark.parametrize(("body", "message"), OTLP_BODIES, ids=[f"case{i}" for i in range(len(OTLP_BODIES))])
def test_a_malformed_otlp_json_trace_export_is_400_with_what_is_wrong(client, keys, body, message):
    response = client.post(
        "/v1/traces", content=body, headers={**auth(keys["ingest"]), "content-type": "application/json"}
    )
    assert response.status_code == 400, response.text
    assert message in response.json()["error"]["message"]


@pytest.mark.parametrize(
    "body", [b"[]", b"null", b'{"resourceLogs": [{"scopeLogs": [{"logRecords": [1]}]}]}']
)
def test_a_malformed_otlp_json_logs_export_is_400(client, keys, body):
    response = client.post(
        "/v1/logs", content=body, headers={**auth(keys["ingest"]), "content-type": "application/json"}
    )
    assert response.status_code == 400, response.text
    assert "the body is not an OTLP/JSON logs export" in response.json()["error"]["message"]


def test_a_malformed_otlp_protobuf_export_is_400(client, keys):
    response = client.post(
        "/v1/traces",
        content=b"\xff\xff\xff",
        headers={**auth(keys["ingest"]), "content-type": "application/x-protobuf"},
    )
    assert response.status_code == 400
    assert "the body is not an OTLP protobuf trace export" in response.json()["error"]["message"]

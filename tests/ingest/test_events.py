"""Ingestion through the real Ingestor into the real store (SQLite and PostgreSQL)."""

from datetime import UTC, datetime, timedelta

import orjson
import pytest
from hypothesis import given
from hypothesis import settings as examples
from hypothesis import strategies as st
from tests.helpers import now, task_events

from flywheel.errors import InvalidInput, PayloadTooLarge
from flywheel.ingest import Ingestor
from flywheel.records import new_id


def test_batch_is_stored_and_queryable(store, settings):
    events = task_events(steps=3)
    result = Ingestor(store, settings).ingest(events)
    assert (result.stored, result.duplicates, result.rejected) == (5, 0, [])
    task = store.get_task(events[0]["id"])
    assert task.success is True
    assert task.output == "answer"
    assert [s.seq for s in task.steps] == [1, 2, 3]
    assert task.steps[0].data["arguments"] == {"i": 0}


def test_replayed_batch_creates_no_duplicates(store, settings):
    ingestor = Ingestor(store, settings)
    events = task_events(steps=2)
    ingestor.ingest(events)
    again = ingestor.ingest(events)
    assert (again.stored, again.duplicates) == (0, 4)
    assert len(store.get_task(events[0]["id"]).steps) == 2
    assert store.stats()["tasks"] == 1


def test_same_event_twice_in_one_batch_is_stored_once(store, settings):
    events = task_events(steps=1)
    result = Ingestor(store, settings).ingest(events + events[1:2])
    assert result.stored == 3
    assert result.duplicates == 1


def test_bad_events_are_rejected_one_by_one_and_good_ones_kept(store, settings):
    good = task_events(steps=1)
    task_id = good[0]["id"]
    bad = [
        {"type": "tool_call", "id": new_id(), "task_id": task_id, "name": "x", "started_at": "yesterday-ish"},
        {"type": "telepathy", "id": new_id(), "task_id": task_id, "started_at": now()},
        {
            "type": "tool_call",
            "id": new_id(),
            "task_id": task_id,
            "name": 42,
            "started_at": now(),
            "attempt": "two",
        },
        {"type": "task_started", "id": new_id(), "session_id": "s", "started_at": now()},
        {
            "type": "reasoning",
            "id": new_id(),
            "task_id": task_id,
            "text": "x",
            "started_at": (datetime.now(UTC) + timedelta(days=30)).isoformat(),
        },
        "not an object",
    ]
    result = Ingestor(store, settings).ingest(good + bad)
    assert result.stored == len(good)
    rejected = {e.index: e for e in result.rejected}
    assert sorted(rejected) == list(range(len(good), len(good) + len(bad)))
    first = len(good)
    assert rejected[first].field == "tool_call.started_at"
    assert "telepathy" in rejected[first + 1].message
    assert rejected[first + 2].field.startswith("tool_call.")
    assert "more problem" in rejected[first + 2].message  # name and attempt are both wrong
    assert rejected[first + 3].field == "task_started.workload"
    assert "future" in rejected[first + 4].message
    assert rejected[first + 2].id == bad[2]["id"]


def test_oversize_field_rejects_only_that_event(store, settings):
    small = settings.model_copy(update={"max_field_chars": 1000})
    events = task_events(steps=2)
    events[1]["output"] = {"rows": ["x" * 1001]}
    result = Ingestor(store, small).ingest(events)
    assert [e.index for e in result.rejected] == [1]
    assert result.rejected[0].field == "output.rows[0]"
    assert "1001 characters" in result.rejected[0].message
    assert result.stored == 3


def test_invalid_json_and_invalid_utf8_are_request_errors(store, settings):
    ingestor = Ingestor(store, settings)
    with pytest.raises(InvalidInput, match="not valid UTF-8 JSON"):
        ingestor.ingest_body(b'{"events": [')
    with pytest.raises(InvalidInput, match="not valid UTF-8 JSON"):
        ingestor.ingest_body(b'{"events": ["\xff\xfe"]}')
    with pytest.raises(InvalidInput, match="must be"):
        ingestor.ingest_body(b'{"event": []}')


def test_batch_over_the_event_limit_is_413(store, settings):
    limited = settings.model_copy(update={"max_batch_events": 3})
    with pytest.raises(PayloadTooLarge) as info:
        Ingestor(store, limited).ingest_body(orjson.dumps(task_events(steps=2)))
    assert info.value.status == 413


def test_nul_characters_are_replaced_not_lost(store, settings):
    events = task_events(steps=1)
    events[1]["output"] = "before\x00after"
    Ingestor(store, settings).ingest(events)
    assert store.get_task(events[0]["id"]).steps[0].data["output"] == "before\ufffdafter"


def test_secrets_are_redacted_before_storage_and_counted(store, settings):
    events = task_events(steps=1)
    events[0]["input"] = "my key is sk-proj-abcdefghijklmnopqrstuvwxyz123456"
    events[-1]["input"] = events[0]["input"]
    events[1]["arguments"] = {"card": "4111 1111 1111 1111", "token": "Bearer abcdefghijklmnopqrstuv"}
    Ingestor(store, settings).ingest(events)
    task = store.get_task(events[0]["id"])
    assert task.input == "my key is [REDACTED:api_key]"
    assert task.steps[0].data["arguments"] == {
        "card": "[REDACTED:credit_card]",
        "token": "[REDACTED:bearer_token]",
    }
    assert task.redactions == 3


def test_outcome_arriving_before_start_still_makes_one_complete_task(store, settings):
    events = task_events(steps=1)
    ingestor = Ingestor(store, settings)
    ingestor.ingest([events[-1]])
    result = ingestor.ingest(events[:-1])
    task = store.get_task(events[0]["id"])
    assert task.success is True and task.output == "answer"
    assert len(task.steps) == 1
    assert result.duplicates == 1  # the start adds nothing the outcome did not carry


def test_labels_of_every_kind_are_stored(store, settings):
    events = task_events(steps=1)
    task_id = events[0]["id"]
    labels = [
        {
            "type": "feedback",
            "id": new_id(),
            "task_id": task_id,
            "thumbs": -1,
            "comment": "wrong",
            "at": now(),
        },
        {
            "type": "feedback",
            "id": new_id(),
            "task_id": task_id,
            "edited": True,
            "edited_output": "better",
            "at": now(),
        },
        {
            "type": "correction",
            "id": new_id(),
            "task_id": task_id,
            "tool_calls": [{"name": "lookup", "arguments": {"i": 2}}],
            "at": now(),
        },
        {
            "type": "annotation",
            "id": new_id(),
            "task_id": task_id,
            "at": now(),
            "annotation": {"kind": "preference", "response_a": "x", "response_b": "y", "preferred": "b"},
        },
        {
            "type": "annotation",
            "id": new_id(),
            "task_id": task_id,
            "at": now(),
            "annotation": {"kind": "missing_knowledge", "text": "refunds take 5 days"},
        },
    ]
    result = Ingestor(store, settings).ingest(events + labels)
    assert result.rejected == []
    task = store.get_task(task_id)
    assert [f["thumbs"] for f in task.feedback] == [-1, None]
    assert task.corrections[0]["tool_calls"] == [{"name": "lookup", "arguments": {"i": 2}}]
    assert {a["kind"] for a in task.annotations} == {"preference", "missing_knowledge"}


def test_names_and_label_authors_are_redacted_too(store, settings):
    secret = "sk-proj-" + "Z9" * 12
    events = task_events(workload=f"w {secret}", steps=1)
    task_id = events[0]["id"]
    labels = [
        {"type": "feedback", "id": new_id(), "task_id": task_id, "rating": 2, "source": secret, "at": now()},
        {
            "type": "correction",
            "id": new_id(),
            "task_id": task_id,
            "output": "x",
            "author": secret,
            "at": now(),
        },
    ]
    result = Ingestor(store, settings).ingest(events + labels)
    assert (result.stored, result.rejected) == (5, [])
    task = store.get_task(task_id)
    assert task.workload == "w [REDACTED:api_key]"
    assert task.feedback[0]["source"] == "[REDACTED:api_key]"
    assert task.corrections[0]["author"] == "[REDACTED:api_key]"


def test_a_name_that_redaction_makes_too_long_is_refused(store, settings):
    started = task_events(workload="1.1.1.1 " * 24 + "end", steps=1)[0]  # 195 characters
    settings = settings.model_copy(update={"redact": [*settings.redact, "ip_address"]})
    result = Ingestor(store, settings).ingest([started])
    [error] = result.rejected
    assert (error.field, error.message) == (
        "workload",
        "workload is 531 characters long after redaction; the limit is 200",
    )


def test_a_python_value_the_store_cannot_encode_is_that_events_error(store, settings):
    events = task_events(steps=2)
    events[1]["output"] = {"n": 2**80}
    result = Ingestor(store, settings).ingest(events)
    assert result.stored == 3
    [error] = result.rejected
    assert (error.index, error.field) == (1, "output.n")
    assert error.message == "integer 1208925819614629174706176 is outside 64 bits (-2^63 to 2^64-1)"


numbers = st.one_of(
    st.integers(),
    st.integers(min_value=2**63 - 10, max_value=2**70),
    st.integers(min_value=-(2**70), max_value=-(2**63) + 10),
    st.floats(allow_nan=True, allow_infinity=True),
    st.sampled_from([1e308, 1.7976931348623157e308, 5e-324]),
)
json_values = st.recursive(
    st.none() | st.booleans() | numbers | st.text(max_size=12),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=4), children, max_size=4)
    ),
    max_leaves=12,
)


@given(value=json_values, indent=st.sampled_from([None, 1, "\t"]), exponent=st.booleans())
@examples(max_examples=400)
def test_every_number_the_strict_reader_would_keep_inexactly_is_noticed(value, indent, exponent):
    """The quick test of a body (``_maybe_inexact``) never misses a NaN, an infinity
    or an integer outside 64 bits that reading it would produce."""
    import json

    from pydantic_core import from_json

    from flywheel.ingest.events import _maybe_inexact, json_problem

    text = json.dumps({"events": [{"output": value}]}, indent=indent)
    if exponent:  # also as JSON writes large numbers in exponent form: 1e+400
        text = text.replace("Infinity", "1E+400")
    body = text.encode()
    try:
        parsed = from_json(body, allow_inf_nan=False)
    except ValueError:
        parsed = json.loads(body)
    if json_problem(parsed) is not None:
        assert _maybe_inexact(body)


def test_a_nul_in_a_label_source_or_author_is_replaced(store, settings):
    events = task_events(steps=1)
    task_id = events[0]["id"]
    labels = [
        {
            "type": "feedback",
            "id": new_id(),
            "task_id": task_id,
            "rating": 4,
            "source": "app\x00",
            "at": now(),
        },
        {
            "type": "correction",
            "id": new_id(),
            "task_id": task_id,
            "output": "x",
            "author": "a\x00b",
            "at": now(),
        },
    ]
    result = Ingestor(store, settings).ingest(events + labels)
    assert (result.stored, result.rejected) == (5, [])
    task = store.get_task(task_id)
    assert task.feedback[0]["source"] == "app\ufffd"
    assert task.corrections[0]["author"] == "a\ufffdb"

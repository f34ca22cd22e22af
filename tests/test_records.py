import uuid
from datetime import UTC, datetime, timedelta

import pytest
from pydantic import ValidationError

from flywheel.records import event_adapter, new_id


def test_ids_are_uuid7_and_sort_by_creation_time():
    first = new_id()
    later = [new_id() for _ in range(1000)]
    parsed = uuid.UUID(first)
    assert parsed.version == 7
    assert parsed.variant == uuid.RFC_4122
    assert len(set(later)) == 1000
    assert all(first[:13] <= other[:13] for other in later)


def test_timestamp_far_in_the_future_is_refused():
    future = (datetime.now(UTC) + timedelta(days=2)).isoformat()
    with pytest.raises(ValidationError, match="in the future"):
        event_adapter.validate_python(
            {"type": "reasoning", "id": "a", "task_id": "t", "text": "x", "started_at": future}
        )


def test_naive_and_offset_timestamps_are_stored_as_utc():
    event = event_adapter.validate_python(
        {
            "type": "reasoning",
            "id": "a",
            "task_id": "t",
            "text": "x",
            "started_at": "2026-01-01T12:00:00+02:00",
        }
    )
    assert event.started_at == datetime(2026, 1, 1, 10, 0, tzinfo=UTC)
    naive = event_adapter.validate_python(
        {"type": "reasoning", "id": "a", "task_id": "t", "text": "x", "started_at": "2026-01-01T12:00:00"}
    )
    assert naive.started_at.tzinfo is UTC


def test_feedback_without_any_signal_is_refused():
    with pytest.raises(ValidationError, match="no signal"):
        event_adapter.validate_python(
            {"type": "feedback", "id": "f", "task_id": "t", "at": datetime.now(UTC)}
        )


def test_correction_needs_output_or_tool_calls():
    with pytest.raises(ValidationError, match="output or tool_calls"):
        event_adapter.validate_python(
            {"type": "correction", "id": "c", "task_id": "t", "at": datetime.now(UTC)}
        )


def test_ids_with_slashes_or_spaces_are_refused():
    with pytest.raises(ValidationError):
        event_adapter.validate_python(
            {"type": "reasoning", "id": "a/b", "task_id": "t", "text": "x", "started_at": datetime.now(UTC)}
        )

"""Bulk reads for curation: the lean tasks carry what the full ones do, and the
reading thread stops and reports errors."""

import threading

import pytest
from tests.curate.test_curate import log

import flywheel


def test_curation_tasks_carry_the_last_call_the_tool_summary_and_the_labels(settings, store):
    fw = flywheel.init("shop", settings=settings)
    calls = [{"name": "get_weather", "arguments": {"city": "Oslo"}}]
    flaky = log(fw, "weather in Oslo?", calls, tool_error=True, retries=1, fallback=True)
    clean = log(fw, "weather in Rome?", calls)
    fw.feedback(flaky, thumbs=-1)
    fw.correct(flaky, tool_calls=calls)
    fw.flush()
    fw.close()
    lean = {t.id: t for chunk in store.iter_curation_tasks("shop", chunk=1) for t in chunk}
    full = {t.id: t for chunk in store.iter_tasks_detailed("shop") for t in chunk}
    assert set(lean) == set(full) == {flaky, clean}
    for task_id, task in lean.items():
        last = [s for s in full[task_id].steps if s.kind == "llm_call"][-1].data
        assert task.last_call == {k: last[k] for k in ("messages", "tools", "response")}
        assert task.ended_at == full[task_id].ended_at and task.ended_at.tzinfo is not None
        assert task.output == full[task_id].output
        assert (task.feedback, task.corrections) == (full[task_id].feedback, full[task_id].corrections)
    assert (lean[flaky].tool_errors, lean[flaky].retries, lean[flaky].fallback) == (1, 1, True)
    assert (lean[clean].tool_errors, lean[clean].retries, lean[clean].fallback) == (0, 0, False)


def test_a_reader_that_fails_raises_and_a_closed_one_stops(settings, store):
    fw = flywheel.init("shop", settings=settings)
    for i in range(30):
        log(fw, f"weather in town {i}?", [{"name": "get_weather", "arguments": {"city": f"t{i}"}}])
    fw.flush()
    fw.close()
    before = threading.active_count()
    chunks = store.iter_curation_tasks("shop", chunk=2)
    assert len(next(chunks)) == 2
    chunks.close()  # the reader thread ends instead of waiting to hand over the next chunk
    assert threading.active_count() == before
    with store.engine.begin() as conn:
        conn.exec_driver_sql("ALTER TABLE annotations RENAME TO annotations_away")
    try:
        with pytest.raises(Exception, match="annotations"):
            list(store.iter_curation_tasks("shop"))
    finally:
        with store.engine.begin() as conn:
            conn.exec_driver_sql("ALTER TABLE annotations_away RENAME TO annotations")

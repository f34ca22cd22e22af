"""Bulk reads for curation: the lean tasks carry what the full ones do, in
ranges that cover every task once."""

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


def test_chunks_cover_every_task_once_and_a_broken_read_raises(settings, store):
    fw = flywheel.init("shop", settings=settings)
    for i in range(31):
        log(fw, f"weather in town {i}?", [{"name": "get_weather", "arguments": {"city": f"t{i}"}}])
    fw.flush()
    fw.close()
    chunks = store.curation_chunks("shop", chunk=4)
    assert len(chunks) == 8 and chunks[-1][1] is None
    assert all(chunks[i][1] == chunks[i + 1][0] for i in range(7))  # each range ends where the next starts
    seen = [t.id for chunk in store.iter_curation_tasks("shop", chunk=4) for t in chunk]
    assert len(seen) == len(set(seen)) == 31
    with store.engine.begin() as conn:
        conn.exec_driver_sql("ALTER TABLE annotations RENAME TO annotations_away")
    try:
        with pytest.raises(Exception, match="annotations"):
            list(store.iter_curation_tasks("shop"))
    finally:
        with store.engine.begin() as conn:
            conn.exec_driver_sql("ALTER TABLE annotations_away RENAME TO annotations")

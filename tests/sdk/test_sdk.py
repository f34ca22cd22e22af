"""The SDK against the real local store and a real server."""

import asyncio
import subprocess
import sys

import pytest

import flywheel


@pytest.fixture
def fw(settings):
    client = flywheel.init("support", settings=settings)
    yield client
    client.close()


def test_import_flywheel_loads_neither_sqlalchemy_nor_fastapi():
    code = (
        "import sys, flywheel\n"
        "fw = flywheel.init('w', url='http://127.0.0.1:9')\n"
        "with fw.task(input='x') as t: t.reasoning('r')\n"
        "bad = [m for m in ('sqlalchemy', 'fastapi', 'starlette', 'alembic') if m in sys.modules]\n"
        "print(bad); fw.close(timeout=0.1)\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        timeout=60,
        cwd="/tmp",
        env={"PATH": "/usr/bin:/bin", "FLYWHEEL_HOME": "/tmp/fw-import-test"},
    )
    assert out.stdout.strip() == "[]", out.stderr


def test_local_mode_logs_every_step_kind_and_the_outcome(fw, store):
    with fw.task(session_id="s1", input="Where is A7?", metadata={"intent": "status"}) as task:
        task.retrieval(
            query="A7", documents=[{"id": "d1", "content": "ships in 2 days", "score": 0.8}, "plain text doc"]
        )
        task.llm_call(
            model="m",
            messages=[{"role": "user", "content": "Where is A7?"}],
            response={"content": "lookup"},
            usage={"prompt_tokens": 12, "completion_tokens": 3},
            latency_ms=40,
        )
        task.tool_call(name="lookup", arguments={"id": "A7"}, error="Timeout", attempt=1)
        task.tool_call(name="lookup", arguments={"id": "A7"}, output={"status": "shipped"}, attempt=2)
        task.file_access(path="orders/A7.json", mode="read", bytes=120)
        task.reasoning("It shipped.")
        task.finish(output="It shipped.", success=True, confidence=0.9)
    assert fw.flush(timeout=10)
    stored = store.get_task(task.id)
    assert [s.kind for s in stored.steps] == [
        "retrieval",
        "llm_call",
        "tool_call",
        "tool_call",
        "file_access",
        "reasoning",
    ]
    assert stored.steps[1].data["input_tokens"] == 12 and stored.steps[1].latency_ms == pytest.approx(
        40, abs=1
    )
    assert stored.steps[2].error == "Timeout" and stored.steps[3].data["attempt"] == 2
    assert stored.steps[0].data["documents"][1] == {
        "id": None,
        "content": "plain text doc",
        "score": None,
        "source": None,
    }
    assert (stored.success, stored.confidence, stored.metadata) == (True, 0.9, {"intent": "status"})


def test_an_exception_in_the_task_is_recorded_and_still_raised(fw, store):
    with pytest.raises(KeyError), fw.task(input="x") as task:
        raise KeyError("missing")
    fw.flush()
    stored = store.get_task(task.id)
    assert stored.success is False and stored.error == "KeyError: 'missing'"


def test_a_task_left_without_finish_has_unknown_outcome(fw, store):
    with fw.task(input="x") as task:
        pass
    fw.flush()
    assert store.get_task(task.id).success is None


def test_decorator_makes_each_call_a_task(fw, store):
    @fw.task(session_id="s9")
    def answer(question, loud=False):
        flywheel.current_task().reasoning(f"thinking about {question}")
        return question.upper() if loud else question

    assert answer("hi", loud=True) == "HI"
    assert answer("there") == "there"
    fw.flush()
    tasks, _ = store.list_tasks(session_id="s9")
    assert sorted(t.output for t in tasks) == ["HI", "there"]
    inputs = sorted((t.input for t in tasks), key=lambda i: i["question"])
    assert inputs == [{"question": "hi", "loud": True}, {"question": "there"}]
    assert all(len(store.get_task(t.id).steps) == 1 for t in tasks)


def test_async_decorator_and_context_manager(fw, store):
    @fw.task()
    async def work(x):
        await asyncio.sleep(0)
        return x * 2

    async def main():
        async with fw.task(input="ctx") as task:
            task.reasoning("inside")
            task.finish("done")
        return await work(21), task.id

    result, task_id = asyncio.run(main())
    fw.flush()
    assert result == 42
    assert store.get_task(task_id).output == "done"
    assert store.stats()["tasks"] == 2


def test_feedback_and_corrections(fw, store):
    with fw.task(input="x") as task:
        task.finish("wrong", success=False)
    fw.feedback(task.id, thumbs=-1, comment="no")
    fw.feedback(task.id, edited_output="right")
    fw.feedback(task.id, retried=True)
    fw.correct(task.id, tool_calls=[{"name": "refund", "arguments": {"order": "A1"}}])
    fw.flush()
    stored = store.get_task(task.id)
    assert [(f["thumbs"], f["edited"], f["retried"]) for f in stored.feedback] == [
        (-1, False, False),
        (None, True, False),
        (None, False, True),
    ]
    assert stored.feedback[1]["edited_output"] == "right"
    assert stored.corrections[0]["tool_calls"][0]["name"] == "refund"


def test_invalid_feedback_is_counted_not_raised(fw):
    fw.feedback("some-task", rating=11)
    fw.flush()
    assert fw.stats()["rejected"] == 1


def test_logged_objects_are_frozen_at_log_time(fw, store):
    messages = [{"role": "user", "content": "first"}]
    with fw.task(input="x") as task:
        task.llm_call(model="m", messages=messages)
        messages.append({"role": "assistant", "content": "later"})
        task.finish("ok")
    fw.flush()
    assert store.get_task(task.id).steps[0].data["messages"] == [{"role": "user", "content": "first"}]


def test_unserialisable_values_do_not_break_the_agent(fw, store):
    class Weird:
        def __str__(self):
            return "weird-object"

    with fw.task(input={"obj": Weird(), "ids": {1, 2}, "raw": b"bytes"}) as task:
        task.finish("ok")
    fw.flush()
    assert store.get_task(task.id).input == {"obj": "weird-object", "ids": [1, 2], "raw": "bytes"}


def test_agent_config_records_the_serving_version(fw, store, settings):
    from datetime import UTC, datetime

    from flywheel.store import tables

    with store.engine.begin() as conn:
        conn.execute(
            tables.agent_versions.insert(),
            {
                "id": "v-abc",
                "workload": "support",
                "number": 1,
                "config": {"system_prompt": "be brief"},
                "created_at": datetime.now(UTC),
            },
        )
        conn.execute(
            tables.deployments.insert(),
            {
                "workload": "support",
                "stable_version": "v-abc",
                "canary_share": 0.0,
                "updated_at": datetime.now(UTC),
            },
        )
    with fw.task(session_id="s1", input="x") as task:
        config = fw.agent_config(session_id="s1")
        task.finish("ok")
    fw.flush()
    assert config.config == {"system_prompt": "be brief"}
    assert store.get_task(task.id).agent_version == "v-abc"


def test_queue_overflow_spills_to_disk_before_dropping(settings, store):
    # A flusher that can never keep up: the transport always fails, and the queue is tiny.
    small = settings.model_copy(
        update={"sdk_queue_size": 10, "sdk_batch_size": 5, "url": "http://127.0.0.1:9"}
    )
    fw = flywheel.init("support", settings=small)
    for i in range(200):
        with fw.task(input=i) as task:
            task.finish(i)
    fw.close(timeout=0.5)
    stats = fw.stats()
    assert stats["logged"] == 400
    assert (stats["spooled"], stats["dropped"], stats["queued"]) == (400, 0, 0)
    # All of it is on disk and arrives with the next client.
    replay = flywheel.init("support", settings=settings)
    assert replay.flush(timeout=10)
    replay.close()
    assert store.stats()["tasks"] == 200
    assert store.stats()["workloads"][0]["finished"] == 200


def test_spool_left_by_a_crashed_process_is_replayed_by_the_next(settings, store, tmp_path):
    code = (
        "import os, flywheel\n"
        "fw = flywheel.init('support', url='http://127.0.0.1:9')\n"
        "for i in range(50):\n"
        "    with fw.task(input=i) as t: t.finish(i)\n"
        "fw.pipeline.drain(final=True)\n"
        "os._exit(9)\n"  # die without atexit hooks
    )
    env = {"PATH": "/usr/bin:/bin", "FLYWHEEL_HOME": str(settings.home), "FLYWHEEL_SDK_TIMEOUT": "0.5"}
    subprocess.run([sys.executable, "-c", code], env=env, timeout=60, check=False)
    assert any(settings.spool_dir.rglob("*.json"))
    fw = flywheel.init("support", settings=settings)
    assert fw.flush(timeout=10)
    fw.close()
    assert store.stats()["tasks"] == 50
    assert not any(settings.spool_dir.rglob("*.json"))

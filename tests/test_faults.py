"""Faults with real processes: the server killed with SIGKILL mid-stream, and a server
that is away for a while. Nothing acknowledged is lost; nothing is stored twice."""

import threading
import time

import orjson
import pytest
from sqlalchemy import func, select
from tests.conftest import free_port
from tests.live import LiveServer

import flywheel
from flywheel.store import tables

pytestmark = pytest.mark.slow


def _count(store, table):
    with store.engine.connect() as conn:
        return conn.execute(select(func.count()).select_from(table)).scalar_one()


def _ids(store, table, ids):
    found = set()
    ids = list(ids)
    with store.engine.connect() as conn:
        for i in range(0, len(ids), 500):
            found.update(conn.execute(select(table.c.id).where(table.c.id.in_(ids[i : i + 500]))).scalars())
    return found


def _client(settings, url, key, **kw):
    fast = settings.model_copy(
        update={
            "url": url,
            "api_key": key,
            "sdk_batch_size": 50,
            "sdk_flush_interval": 0.05,
            "sdk_timeout": 2.0,
            **kw,
        }
    )
    return flywheel.init("faults", settings=fast)


def test_kill_9_loses_no_acknowledged_event_and_the_spool_resends_the_rest(settings, store, tmp_path):
    key, _ = store.create_key("agent", ["ingest"])
    server = LiveServer(settings.database_url, tmp_path / "srv").start()
    fw = _client(settings, server.url, key)
    acked_steps, acked_tasks = set(), set()

    def record(response):
        if response.status_code == 200:
            response.read()
            for event in orjson.loads(response.request.content)["events"]:
                (acked_tasks if event["type"].startswith("task_") else acked_steps).add(event["id"])

    fw.transport.client.event_hooks["response"].append(record)
    total = 3000
    done = threading.Event()

    def agent():
        for i in range(total):
            with fw.task(session_id=f"s{i % 17}", input=i) as task:
                task.tool_call(name="lookup", arguments={"i": i}, output=i)
                task.finish(i)
            if i % 100 == 0:
                time.sleep(0.01)
        done.set()

    thread = threading.Thread(target=agent)
    thread.start()
    while len(acked_steps) < 300:
        time.sleep(0.01)
    server.kill()
    killed_with = set(acked_steps)
    # Every event acknowledged before the kill is in the store after it.
    assert _ids(store, tables.steps, killed_with) == killed_with
    done.wait(60)
    thread.join()
    assert fw.stats()["spooled"] > 0
    server = LiveServer(settings.database_url, tmp_path / "srv", port=server.port).start()
    try:
        assert fw.flush(timeout=60)
    finally:
        fw.close()
        server.stop()
    assert _count(store, tables.steps) == total
    assert _count(store, tables.tasks) == total
    with store.engine.connect() as conn:
        finished = conn.execute(select(func.count()).where(tables.tasks.c.ended_at.is_not(None))).scalar_one()
    assert finished == total
    assert _ids(store, tables.steps, acked_steps) == acked_steps


def test_agent_keeps_running_while_the_server_is_away_and_everything_arrives(settings, store, tmp_path):
    key, _ = store.create_key("agent", ["ingest"])
    port = free_port()
    fw = _client(settings, f"http://127.0.0.1:{port}", key)
    started = time.perf_counter()
    for i in range(2000):
        with fw.task(input=i) as task:
            task.reasoning(f"step {i}")
            task.finish(i)
    agent_seconds = time.perf_counter() - started
    time.sleep(0.3)
    stats = fw.stats()
    assert stats["spool_files"] > 0 and stats["sent"] == 0
    server = LiveServer(settings.database_url, tmp_path / "srv", port=port).start()
    try:
        assert fw.flush(timeout=60)
    finally:
        fw.close()
        server.stop()
    assert _count(store, tables.tasks) == 2000
    assert _count(store, tables.steps) == 2000
    assert fw.stats()["replayed"] > 0
    print(f"agent logged 2,000 tasks offline in {agent_seconds:.3f} s")

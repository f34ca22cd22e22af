"""Prometheus /metrics: what the store knows, and per-process counters summed
over several worker processes."""

import re

import httpx
import orjson
import pytest
from tests.helpers import task_events
from tests.live import LiveServer
from tests.server.conftest import auth

import flywheel
from flywheel.deploy import create_version, promote


def _value(text: str, name: str, **labels: str) -> float | None:
    for line in text.splitlines():
        if not line.startswith(name + "{") and line.split(" ")[0] != name:
            continue
        found = dict(re.findall(r'(\w+)="([^"]*)"', line.split(" ")[0]))
        if all(found.get(k) == v for k, v in labels.items()):
            return float(line.rsplit(" ", 1)[1])
    return None


def test_store_gauges_per_version_backlog_and_cycles(client, store, keys, settings):
    version = create_version(store, "shop", {"model": "m"})
    promote(store, "shop", version.id)
    fw = flywheel.init("shop", settings=settings)
    for i in range(4):
        with fw.task(session_id=f"s{i}", input="q", agent_version=version.id) as task:
            task.llm_call(model="m", messages=[{"role": "user", "content": "q"}], cost=0.002)
            task.finish(output="a", success=i < 3)
    fw.flush()
    fw.close()
    text = client.get("/metrics", headers=auth(keys["review"])).text
    assert _value(text, "flywheel_live_tasks", workload="shop", version=version.id) == 4
    assert _value(text, "flywheel_live_success_ratio", workload="shop", version=version.id) == 0.75
    assert _value(
        text, "flywheel_live_cost_per_task_usd", workload="shop", version=version.id
    ) == pytest.approx(0.002)
    assert "flywheel_review_backlog" in text and "flywheel_cycle_seconds" in text


@pytest.mark.slow
def test_counters_are_summed_over_worker_processes(settings, store):
    key, _ = store.create_key("agent", ["ingest"])
    server = LiveServer(settings.database_url, settings.home, args=("--workers", "2")).start()
    try:
        sent = 0
        for _ in range(60):  # new connections: the kernel spreads them over both workers
            with httpx.Client(base_url=server.url, headers=auth(key)) as http:
                response = http.post("/v1/events", content=orjson.dumps(task_events(steps=1)))
                assert response.status_code == 200
                sent += 3
        files = list((settings.home / f"prometheus-{server.port}").glob("counter_*.db"))
        assert len(files) == 2  # one per worker process, each counted its own share
        for _ in range(5):  # any worker answers with the sum of all of them
            with httpx.Client(base_url=server.url, headers=auth(key)) as http:
                text = http.get("/metrics").text
            assert _value(text, "flywheel_ingested_events_total", route="events", result="stored") == sent
    finally:
        server.stop()


def test_the_grafana_dashboard_asks_only_for_series_we_export(client, keys):
    import json
    from pathlib import Path

    client.post("/v1/events", content=orjson.dumps(task_events(steps=1)), headers=auth(keys["ingest"]))
    text = client.get("/metrics", headers=auth(keys["admin"])).text
    exported = {line.split(" ")[2] for line in text.splitlines() if line.startswith("# TYPE")}
    exported |= {f"{name}_total" for name in exported}
    dashboard = json.loads(
        (Path(__file__).parents[2] / "deploy" / "grafana" / "data-flywheel.json").read_text()
    )
    asked = {
        name
        for panel in dashboard["panels"]
        for target in panel["targets"]
        for name in re.findall(r"flywheel_\w+", target["expr"])
    }
    assert asked and asked <= exported, asked - exported

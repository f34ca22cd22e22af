"""The HTTP API through the real app (TestClient drives its ASGI interface)."""

import json
from pathlib import Path

import orjson
from tests.helpers import task_events
from tests.server.conftest import auth

from flywheel.records import new_id
from flywheel.server import create_app

ROOT = Path(__file__).parents[2]


def test_events_are_committed_before_the_200(client, store, keys):
    events = task_events(steps=2)
    response = client.post(
        "/v1/events", content=orjson.dumps({"events": events}), headers=auth(keys["ingest"])
    )
    assert response.status_code == 200
    assert response.json() == {
        "received": 4,
        "accepted": 4,
        "stored": 4,
        "duplicates": 0,
        "rejected": [],
        "unpriced_calls": 0,
    }
    assert len(store.get_task(events[0]["id"]).steps) == 2


def test_retried_batch_reports_duplicates(client, keys):
    body = orjson.dumps(task_events(steps=1))
    client.post("/v1/events", content=body, headers=auth(keys["ingest"]))
    again = client.post("/v1/events", content=body, headers=auth(keys["ingest"])).json()
    assert (again["stored"], again["duplicates"]) == (0, 3)


def test_partly_bad_batch_keeps_the_good_events(client, store, keys):
    events = task_events(steps=1)
    events.insert(1, {"type": "tool_call", "id": new_id(), "task_id": events[0]["id"], "name": "x"})
    response = client.post("/v1/events", content=orjson.dumps(events), headers=auth(keys["ingest"]))
    assert response.status_code == 200
    body = response.json()
    assert body["stored"] == 3
    assert body["rejected"] == [
        {"index": 1, "id": events[1]["id"], "field": "tool_call.started_at", "message": "Field required"}
    ]


def test_wholly_bad_batch_is_422_with_every_error(client, keys):
    response = client.post("/v1/events", json=[{"type": "nope"}, {}], headers=auth(keys["ingest"]))
    assert response.status_code == 422
    assert [e["index"] for e in response.json()["rejected"]] == [0, 1]


def test_malformed_bodies_are_400_not_500(client, keys):
    for body in (b"{not json", b'{"events": "x"}', b"\xff\xfe\xfa"):
        response = client.post("/v1/events", content=body, headers=auth(keys["ingest"]))
        assert response.status_code == 400, body
        assert response.json()["error"]["type"] == "InvalidInput"


def test_oversize_body_is_413(settings, store, keys):
    from fastapi.testclient import TestClient

    small = settings.model_copy(update={"max_body_bytes": 2048})
    with TestClient(create_app(small, store=store), base_url="http://localhost") as client:
        response = client.post("/v1/events", content=b"[" + b" " * 4096 + b"]", headers=auth(keys["ingest"]))
    assert response.status_code == 413
    assert "the limit is 2048" in response.json()["error"]["message"]


def test_every_endpoint_but_healthz_needs_a_key(client):
    assert client.get("/healthz").status_code == 200
    for method, path in (
        ("post", "/v1/events"),
        ("get", "/v1/tasks"),
        ("get", "/v1/stats"),
        ("post", "/v1/traces"),
        ("get", "/metrics"),
        ("get", "/v1/agent-config?workload=w"),
    ):
        response = getattr(client, method)(path)
        assert response.status_code == 401, path
        assert "flywheel keys create" in response.json()["error"]["hint"]


def test_ingest_key_cannot_read_tasks(client, keys):
    response = client.get("/v1/tasks", headers=auth(keys["ingest"]))
    assert response.status_code == 403
    assert "ingest" in response.json()["error"]["message"]
    assert client.get("/v1/stats", headers=auth(keys["ingest"])).status_code == 403


def test_revoked_key_stops_working(client, store, keys):
    assert client.get("/v1/tasks", headers=auth(keys["review"])).status_code == 200
    store.revoke_key(store.find_key(keys["review"]).id)
    assert client.get("/v1/tasks", headers=auth(keys["review"])).status_code == 401


def test_only_hashes_of_keys_are_stored(store, keys):
    from sqlalchemy import select

    from flywheel.store.tables import api_keys

    with store.engine.connect() as conn:
        stored = " ".join(str(v) for row in conn.execute(select(api_keys)) for v in row)
    assert not any(secret in stored for secret in keys.values())


def test_task_list_filters_and_pages(client, keys):
    for i in range(5):
        client.post(
            "/v1/events",
            content=orjson.dumps(task_events(workload="a", success=i % 2 == 0)),
            headers=auth(keys["ingest"]),
        )
    client.post("/v1/events", content=orjson.dumps(task_events(workload="b")), headers=auth(keys["ingest"]))
    headers = auth(keys["review"])
    page = client.get("/v1/tasks?workload=a&limit=2", headers=headers).json()
    seen = [t["id"] for t in page["tasks"]]
    while page["next_cursor"]:
        page = client.get(
            "/v1/tasks", params={"workload": "a", "limit": 2, "cursor": page["next_cursor"]}, headers=headers
        ).json()
        seen += [t["id"] for t in page["tasks"]]
    assert len(seen) == len(set(seen)) == 5
    failed = client.get("/v1/tasks?workload=a&success=false", headers=headers).json()["tasks"]
    assert len(failed) == 2 and all(t["success"] is False for t in failed)
    assert client.get("/v1/tasks?limit=0", headers=headers).status_code == 400
    assert client.get("/v1/tasks?cursor=garbage", headers=headers).status_code == 400


def test_task_detail_and_404(client, keys):
    events = task_events(steps=2)
    client.post("/v1/events", content=orjson.dumps(events), headers=auth(keys["ingest"]))
    task = client.get(f"/v1/tasks/{events[0]['id']}", headers=auth(keys["review"])).json()
    assert [s["kind"] for s in task["steps"]] == ["tool_call", "tool_call"]
    missing = client.get("/v1/tasks/nope", headers=auth(keys["review"]))
    assert missing.status_code == 404 and "nope" in missing.json()["error"]["message"]


def test_feedback_corrections_annotations_and_their_audit(client, store, keys):
    events = task_events(steps=1)
    task_id = events[0]["id"]
    client.post("/v1/events", content=orjson.dumps(events), headers=auth(keys["ingest"]))
    fb = client.post(
        f"/v1/tasks/{task_id}/feedback",
        json={"thumbs": -1, "comment": "wrong tool"},
        headers=auth(keys["ingest"]),
    )
    assert fb.status_code == 200 and fb.json()["stored"] is True
    fixed = {"tool_calls": [{"name": "refund", "arguments": {"order": "A1"}}], "id": "corr-1"}
    assert client.post(f"/v1/tasks/{task_id}/corrections", json=fixed, headers=auth(keys["review"])).json()[
        "stored"
    ]
    assert (
        client.post(f"/v1/tasks/{task_id}/corrections", json=fixed, headers=auth(keys["review"])).json()[
            "stored"
        ]
        is False
    )
    note = {"annotation": {"kind": "adoption", "adopted": False, "rationale": "policy changed"}}
    assert (
        client.post(f"/v1/tasks/{task_id}/annotations", json=note, headers=auth(keys["ingest"])).status_code
        == 403
    )
    assert (
        client.post(f"/v1/tasks/{task_id}/annotations", json=note, headers=auth(keys["review"])).status_code
        == 200
    )
    bad = client.post(f"/v1/tasks/{task_id}/feedback", json={"rating": 9}, headers=auth(keys["ingest"]))
    assert bad.status_code == 400 and "rating" in bad.json()["error"]["message"]
    assert (
        client.post("/v1/tasks/nope/feedback", json={"thumbs": 1}, headers=auth(keys["ingest"])).status_code
        == 404
    )
    task = store.get_task(task_id)
    assert (len(task.feedback), len(task.corrections), len(task.annotations)) == (1, 1, 1)
    assert task.annotations[0]["author"] == "key:review-key"
    actions = sorted(e.action for e in store.audit_events(record_type="task"))
    assert actions == ["annotation.create", "correction.create", "feedback.create"]


def test_stats_and_metrics(client, keys):
    client.post("/v1/events", content=orjson.dumps(task_events(steps=2)), headers=auth(keys["ingest"]))
    stats = client.get("/v1/stats", headers=auth(keys["review"])).json()
    assert stats["tasks"] == 1 and stats["steps"] == {"tool_call": 2}
    metrics = client.get("/metrics", headers=auth(keys["admin"])).text
    assert 'flywheel_ingested_events_total{result="stored",route="events"} 4.0' in metrics


def test_agent_config_before_any_deployment(client, keys):
    body = client.get("/v1/agent-config?workload=w&session_id=s", headers=auth(keys["ingest"])).json()
    assert body == {"workload": "w", "session_id": "s", "version": None}


def test_committed_openapi_document_is_current(client):
    committed = json.loads((ROOT / "docs" / "openapi.json").read_text())
    assert client.get("/openapi.json").json() == committed, (
        "run: python -m flywheel.server.openapi > docs/openapi.json"
    )


def test_agent_config_routes_sessions(client, store, keys):
    from flywheel.deploy import create_version, promote

    version = create_version(store, "w", {"model": "local"})
    promote(store, "w", version.id)
    body = client.get("/v1/agent-config?workload=w&session_id=s", headers=auth(keys["ingest"])).json()
    assert body["version"]["id"] == version.id and body["version"]["config"] == {"model": "local"}

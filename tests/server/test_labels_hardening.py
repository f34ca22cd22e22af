"""Issue 21, findings 5 (the label routes) and 12: a label's author is the key that
sent it, a retried label is stored once, and a label, its review item's state and
its audit event are committed together or not at all."""

from __future__ import annotations

import re
from collections.abc import Iterator
from contextlib import contextmanager

import orjson
import pytest
from fastapi.testclient import TestClient
from sqlalchemy import text
from tests.helpers import task_events
from tests.server.conftest import auth
from tests.web.test_browser import queue

from flywheel.server import create_app
from flywheel.store import Store

LABELS = {
    "feedback": {"thumbs": -1, "comment": "wrong tool"},
    "corrections": {"output": "the right answer"},
    "annotations": {"annotation": {"kind": "missing_knowledge", "text": "the refund policy"}},
}


@pytest.fixture
def task_id(client, keys) -> str:
    events = task_events()
    assert (
        client.post("/v1/events", content=orjson.dumps(events), headers=auth(keys["ingest"])).status_code
        == 200
    )
    return events[0]["id"]


@contextmanager
def audits_refused(store: Store) -> Iterator[None]:
    """The database refuses every audit event (a trigger: a fault outside our code)."""
    with store.engine.begin() as conn:
        if store.dialect == "sqlite":
            conn.execute(
                text(
                    "CREATE TRIGGER refuse_audit BEFORE INSERT ON audit_events "
                    "BEGIN SELECT RAISE(ABORT, 'audit refused'); END"
                )
            )
        else:
            conn.execute(
                text(
                    "CREATE FUNCTION refuse_audit() RETURNS trigger AS "
                    "$$ BEGIN RAISE EXCEPTION 'audit refused'; END $$ LANGUAGE plpgsql"
                )
            )
            conn.execute(
                text(
                    "CREATE TRIGGER refuse_audit BEFORE INSERT ON audit_events "
                    "FOR EACH ROW EXECUTE FUNCTION refuse_audit()"
                )
            )
    try:
        yield
    finally:
        with store.engine.begin() as conn:
            if store.dialect == "sqlite":
                conn.execute(text("DROP TRIGGER refuse_audit"))
            else:
                conn.execute(text("DROP TRIGGER refuse_audit ON audit_events"))
                conn.execute(text("DROP FUNCTION refuse_audit()"))


def _labels(store: Store, task_id: str) -> dict[str, list[dict]]:
    task = store.get_task(task_id)
    return {"feedback": task.feedback, "corrections": task.corrections, "annotations": task.annotations}


# ------------------------------------------------------------------ finding 5


def test_a_label_author_is_the_key_that_sent_it_never_the_body(client, store, keys, task_id):
    forged = {
        "feedback": {**LABELS["feedback"], "source": "key:admin"},
        "corrections": {**LABELS["corrections"], "author": "key:admin"},
        "annotations": {**LABELS["annotations"], "author": "key:admin"},
    }
    for route, body in forged.items():
        response = client.post(f"/v1/tasks/{task_id}/{route}", json=body, headers=auth(keys["review"]))
        assert response.status_code == 400, route
        assert "Extra inputs are not permitted" in response.json()["error"]["message"]
        nested = {**LABELS[route], "annotation": {**LABELS["annotations"]["annotation"], "author": "x"}}
        if route == "annotations":
            assert (
                client.post(
                    f"/v1/tasks/{task_id}/{route}", json=nested, headers=auth(keys["review"])
                ).status_code
                == 400
            )
    assert _labels(store, task_id) == {"feedback": [], "corrections": [], "annotations": []}
    for route, body in LABELS.items():
        key = keys["review"] if route == "annotations" else keys["ingest"]
        assert client.post(f"/v1/tasks/{task_id}/{route}", json=body, headers=auth(key)).status_code == 200
    labels = _labels(store, task_id)
    assert labels["feedback"][0]["source"] == "key:ingest-key"
    assert labels["corrections"][0]["author"] == "key:ingest-key"
    assert labels["annotations"][0]["author"] == "key:review-key"
    actors = {(e.action, e.actor) for e in store.audit_events("task")}
    assert actors == {
        ("feedback.create", "key:ingest-key"),
        ("correction.create", "key:ingest-key"),
        ("annotation.create", "key:review-key"),
    }


def test_annotations_need_the_review_scope_on_every_route(client, store, keys, task_id):
    ingest = auth(keys["ingest"])
    api = client.post(f"/v1/tasks/{task_id}/annotations", json=LABELS["annotations"], headers=ingest)
    assert api.status_code == 403
    page = client.post(
        f"/ui/tasks/{task_id}/review", data={"action": "missing_knowledge", "text": "x"}, headers=ingest
    )
    assert page.status_code == 403
    assert _labels(store, task_id)["annotations"] == []
    assert client.post(
        f"/v1/tasks/{task_id}/annotations", json=LABELS["annotations"], headers=auth(keys["admin"])
    ).json()["stored"]


# ------------------------------------------------------------------ finding 12


def test_a_label_retried_without_an_id_is_stored_once(client, store, keys, task_id):
    for route, body in LABELS.items():
        headers = auth(keys["review"])
        first = client.post(f"/v1/tasks/{task_id}/{route}", json=body, headers=headers).json()
        again = client.post(f"/v1/tasks/{task_id}/{route}", json=body, headers=headers).json()
        assert first["stored"] is True and again == {**first, "stored": False}, route
        # Another key sending the same content is another label.
        other = client.post(f"/v1/tasks/{task_id}/{route}", json=body, headers=auth(keys["admin"])).json()
        assert other["stored"] is True and other["id"] != first["id"]
        # So is the same content sent on purpose with another Idempotency-Key, or another time.
        keyed = {**headers, "Idempotency-Key": "second-thumbs-down"}
        twice = client.post(f"/v1/tasks/{task_id}/{route}", json=body, headers=keyed).json()
        assert twice["stored"] is True and twice["id"] not in (first["id"], other["id"])
        assert client.post(f"/v1/tasks/{task_id}/{route}", json=body, headers=keyed).json()["stored"] is False
        dated = {**body, "at": "2026-01-02T03:04:05+00:00"}
        assert (
            client.post(f"/v1/tasks/{task_id}/{route}", json=dated, headers=headers).json()["stored"] is True
        )
        assert (
            client.post(f"/v1/tasks/{task_id}/{route}", json=dated, headers=headers).json()["stored"] is False
        )
    labels = _labels(store, task_id)
    assert {route: len(rows) for route, rows in labels.items()} == {route: 4 for route in LABELS}
    assert len(store.audit_events("task")) == 12  # one per stored label, none per retry


def test_an_api_label_and_its_audit_event_are_one_transaction(client, store, keys, task_id):
    headers = auth(keys["review"])
    with audits_refused(store):
        for route, body in LABELS.items():
            response = client.post(f"/v1/tasks/{task_id}/{route}", json=body, headers=headers)
            assert response.status_code == 503, route
            assert "nothing was committed" in response.json()["error"]["hint"]
    assert _labels(store, task_id) == {"feedback": [], "corrections": [], "annotations": []}
    for route, body in LABELS.items():  # the client's retry stores each, with its audit event
        assert client.post(f"/v1/tasks/{task_id}/{route}", json=body, headers=headers).json()["stored"]
    assert sorted(e.action for e in store.audit_events("task")) == [
        "annotation.create",
        "correction.create",
        "feedback.create",
    ]


def _csrf(client: TestClient, path: str) -> tuple[str, str]:
    page = client.get(path).text
    csrf = re.search(r'name="csrf" value="([0-9a-f]+)"', page).group(1)  # type: ignore[union-attr]
    form_id = re.search(r'name="form_id" value="([0-9a-f]+)"', page).group(1)  # type: ignore[union-attr]
    return csrf, form_id


def _login(client: TestClient, key: str) -> None:
    page = client.get("/ui/login")
    nonce = re.search(r'name="nonce" value="([0-9a-f]+)"', page.text).group(1)  # type: ignore[union-attr]
    assert client.post("/ui/login", data={"key": key, "nonce": nonce}).status_code == 303


def test_a_ui_review_writes_label_state_and_audit_in_one_transaction(settings, store, client, keys, task_id):
    queue(store, [task_id])
    key, _ = store.create_key("ana", ["review"])
    with TestClient(
        create_app(settings, store=store), base_url="http://localhost", follow_redirects=False
    ) as ui:
        _login(ui, key)
        csrf, form_id = _csrf(ui, f"/ui/tasks/{task_id}")
        form = {"action": "approve", "csrf": csrf, "form_id": form_id, "rationale": "fine"}
        with audits_refused(store):
            failed = ui.post(f"/ui/tasks/{task_id}/review", data=form)
            assert failed.status_code == 503 and "text/html" in failed.headers["content-type"]
        assert _labels(store, task_id)["annotations"] == []
        assert store.review_queue("shop")[0]["state"] == "pending"  # not approved without its label
        assert ui.post(f"/ui/tasks/{task_id}/review", data=form).status_code == 303
        # The browser resubmits the same form (back button, a double click): nothing new.
        assert ui.post(f"/ui/tasks/{task_id}/review", data=form).status_code == 303
    annotations = _labels(store, task_id)["annotations"]
    assert [(a["kind"], a["author"]) for a in annotations] == [("adoption", "key:ana")]
    assert store.review_queue("shop", state="approved")[0]["task_id"] == task_id
    assert [e.action for e in store.audit_events("task")] == ["review.approve"]


def test_a_reviewer_who_changes_their_mind_moves_the_item_each_time(settings, store, client, keys, task_id):
    queue(store, [task_id])
    bearer = auth(keys["review"])  # a script: no form id, so the label's content is its identity
    url = f"/ui/tasks/{task_id}/review"
    for action in ("approve", "reject", "approve"):
        assert (
            client.post(url, data={"action": action}, headers=bearer, follow_redirects=False).status_code
            == 303
        )
        state = {"approve": "approved", "reject": "rejected"}[action]
        assert store.review_queue("shop", state=state)[0]["task_id"] == task_id
    adopted = [a["data"]["adopted"] for a in _labels(store, task_id)["annotations"]]
    assert sorted(adopted) == [False, True]  # the second approve is the first one's label again
    actions = sorted(e.action for e in store.audit_events("task"))
    assert actions == ["review.approve", "review.approve", "review.reject"]  # each state change audited

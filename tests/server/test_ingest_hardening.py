"""The way in under hostile or careless clients, through the real server on both
databases: gzip bombs, forged label authors, secrets hidden by JSON escapes,
adversarial redaction input, and an id reused for other content."""

from __future__ import annotations

import gzip
import zlib

import orjson
import pytest
from fastapi.testclient import TestClient
from tests.helpers import now, task_events
from tests.server.conftest import auth

from flywheel.records import new_id
from flywheel.server import create_app

# ------------------------------------------------------------------ gzip

SIGNALS = [
    ("/v1/events", "application/json"),
    ("/v1/traces", "application/json"),
    ("/v1/logs", "application/json"),
    ("/v1/traces", "application/x-protobuf"),
]


@pytest.fixture
def small_client(settings, store):
    """A server whose body limit is 64 KiB."""
    small = settings.model_copy(update={"max_body_bytes": 65_536})
    with TestClient(create_app(small, store=store), base_url="http://localhost") as client:
        yield client


def _bomb(size: int) -> bytes:
    """A small gzip body that decompresses to ``size`` bytes of spaces."""
    compressor = zlib.compressobj(9, wbits=31)
    chunk = b" " * 1_000_000
    out = b"".join(compressor.compress(chunk) for _ in range(size // len(chunk)))
    return out + compressor.flush()


@pytest.mark.parametrize(("path", "content_type"), SIGNALS)
def test_a_gzip_body_that_decompresses_past_the_limit_is_413(small_client, keys, path, content_type):
    bomb = _bomb(50_000_000)
    assert len(bomb) < 65_536
    headers = {**auth(keys["ingest"]), "content-encoding": "gzip", "content-type": content_type}
    response = small_client.post(path, content=bomb, headers=headers)
    assert response.status_code == 413, response.text
    error = response.json()["error"]
    assert error["message"] == "the gzip body decompresses to more than the limit of 65536 bytes"
    assert "applies after decompression" in error["hint"]


def test_a_gzip_body_just_over_the_limit_is_413_and_one_at_the_limit_is_read(small_client, keys):
    headers = {**auth(keys["ingest"]), "content-encoding": "gzip"}
    padded = b"[" + b" " * (65_536 - 2) + b"]"
    assert small_client.post("/v1/events", content=gzip.compress(padded), headers=headers).status_code == 200
    over = b"[" + b" " * (65_536 - 1) + b"]"
    assert small_client.post("/v1/events", content=gzip.compress(over), headers=headers).status_code == 413


def test_gzip_events_several_members_included_are_stored(client, store, keys):
    events = task_events(steps=1)
    text = orjson.dumps(events)
    body = gzip.compress(text[:50]) + gzip.compress(text[50:])  # two gzip members, as `cat a.gz b.gz`
    headers = {**auth(keys["ingest"]), "content-encoding": "gzip"}
    response = client.post("/v1/events", content=body, headers=headers)
    assert response.status_code == 200, response.text
    assert response.json()["stored"] == 3


@pytest.mark.parametrize(
    ("body", "message"),
    [
        (gzip.compress(b"[]")[:-6], "the body is not valid gzip: the gzip stream is cut short"),
        (b"not gzip at all", "the body is not valid gzip"),
        (gzip.compress(b"[]") + b"trailing", "the body is not valid gzip: it has data after the gzip stream"),
    ],
    ids=["cut_short", "not_gzip", "trailing_data"],
)
def test_a_broken_gzip_body_is_400(client, keys, body, message):
    headers = {**auth(keys["ingest"]), "content-encoding": "gzip"}
    response = client.post("/v1/events", content=body, headers=headers)
    assert response.status_code == 400, response.text
    assert response.json()["error"]["message"].startswith(message)


def test_an_unsupported_content_encoding_is_415(client, keys):
    headers = {**auth(keys["ingest"]), "content-encoding": "br"}
    response = client.post("/v1/events", content=b"[]", headers=headers)
    assert response.status_code == 415
    assert response.json()["error"]["message"] == "Content-Encoding 'br' is not supported"


# ---------------------------------------------------------------- labels


def _labels(task_id: str, author: str) -> list[dict]:
    at = now()
    return [
        {"type": "feedback", "id": new_id(), "task_id": task_id, "thumbs": 1, "source": author, "at": at},
        {
            "type": "correction",
            "id": new_id(),
            "task_id": task_id,
            "output": "fixed",
            "author": author,
            "at": at,
        },
        {
            "type": "annotation",
            "id": new_id(),
            "task_id": task_id,
            "author": author,
            "at": at,
            "annotation": {"kind": "preference", "response_a": "x", "response_b": "y", "preferred": "a"},
        },
    ]


def test_an_ingest_key_cannot_annotate_or_write_labels_in_another_name(client, store, keys):
    events = task_events(steps=1)
    labels = _labels(events[0]["id"], "key:admin-key")
    response = client.post("/v1/events", json=events + labels, headers=auth(keys["ingest"]))
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["stored"] == 5
    [refused] = body["rejected"]
    assert (refused["index"], refused["field"]) == (5, "type")
    assert refused["message"].startswith(
        "an annotation needs a key with the review scope; key 'ingest-key' has ingest"
    )
    task = store.get_task(events[0]["id"])
    assert task.annotations == []
    assert task.feedback[0]["source"] == "key:ingest-key"
    assert task.corrections[0]["author"] == "key:ingest-key"


@pytest.mark.parametrize("scopes", [["ingest", "review"], ["admin"]])
def test_a_key_with_the_review_scope_annotates_in_its_own_name(client, store, keys, scopes):
    events = task_events(steps=1)
    client.post("/v1/events", json=events, headers=auth(keys["ingest"]))
    key, _ = store.create_key("reviewer", scopes)
    labels = _labels(events[0]["id"], "someone-else")
    response = client.post("/v1/events", json=labels, headers=auth(key))
    assert response.status_code == 200, response.text
    assert (response.json()["stored"], response.json()["rejected"]) == (3, [])
    task = store.get_task(events[0]["id"])
    assert task.annotations[0]["author"] == "key:reviewer"
    assert task.corrections[0]["author"] == "key:reviewer"
    assert task.feedback[0]["source"] == "key:reviewer"


# ------------------------------------------------------------- redaction

SECRET = "sk-proj-" + "A1b2C3d4E5f6G7h8I9j0K1l2"


def test_a_secret_spelled_with_json_escapes_is_redacted(client, store, keys):
    events = task_events(steps=1)
    task_id = events[0]["id"]
    escaped = SECRET.replace("s", "\\u0073", 1).replace("k", "\\u006b", 1)
    body = orjson.dumps(events).replace(b'"output":"row"', b'"output":"key ' + escaped.encode() + b'"')
    bearer = b'"B\\u0065arer ' + b"Z" * 24 + b'"'
    body = body.replace(b'"input":"question"', b'"input":' + bearer, 1)
    assert b"sk-proj" not in body and b"Bearer" not in body
    response = client.post("/v1/events", content=body, headers=auth(keys["ingest"]))
    assert response.json()["stored"] == 3, response.text
    task = store.get_task(task_id)
    assert task.steps[0].data["output"] == "key [REDACTED:api_key]"
    assert task.input == "[REDACTED:bearer_token]"


def test_names_are_redacted_like_any_text(client, store, keys):
    at = now()
    task_id = new_id()
    event = {
        "type": "task_started",
        "id": task_id,
        "workload": f"triage {SECRET}",
        "session_id": f"s-{SECRET}",
        "agent_version": f"v-{SECRET}",
        "started_at": at,
    }
    response = client.post("/v1/events", json=[event], headers=auth(keys["ingest"]))
    assert response.json()["stored"] == 1, response.text
    task = store.get_task(task_id)
    assert (task.workload, task.session_id, task.agent_version) == (
        "triage [REDACTED:api_key]",
        "s-[REDACTED:api_key]",
        "v-[REDACTED:api_key]",
    )
    assert task.redactions == 3


ADVERSARIAL = {
    "private_key_headers": "-----BEGIN PRIVATE KEY-----" * 7_000,
    "email_local_parts": "a." * 100_000,
    "jwt_segments": "-eyJ" * 50_000,
}


@pytest.mark.parametrize("name", sorted(ADVERSARIAL))
def test_adversarial_redaction_input_is_stored_and_its_secret_redacted(client, store, keys, name):
    """Inputs that took the old patterns quadratic time (minutes at this size) are
    read in one pass; the secret after them is still found."""
    events = task_events(steps=1)
    events[1]["output"] = ADVERSARIAL[name] + " and then " + SECRET
    response = client.post("/v1/events", json=events, headers=auth(keys["ingest"]))
    assert response.json()["stored"] == 3, response.text
    stored = store.get_task(events[0]["id"]).steps[0].data["output"]
    assert stored == ADVERSARIAL[name] + " and then [REDACTED:api_key]"


# --------------------------------------------------------------- conflicts


def test_an_identical_retry_is_a_silent_duplicate(client, keys):
    events = task_events(steps=1)
    client.post("/v1/events", json=events, headers=auth(keys["ingest"]))
    again = client.post("/v1/events", json=events, headers=auth(keys["ingest"]))
    assert again.status_code == 200
    assert (again.json()["stored"], again.json()["duplicates"], again.json()["rejected"]) == (0, 3, [])


def test_an_id_reused_for_other_content_is_a_conflict_and_the_first_write_stays(client, store, keys):
    events = task_events(steps=2)
    labels = _labels(events[0]["id"], "x")[:2]
    client.post("/v1/events", json=events + labels, headers=auth(keys["ingest"]))
    changed = [dict(e) for e in events + labels]
    changed[1]["output"] = "another row"  # a step
    changed[4]["thumbs"] = -1  # feedback
    changed[5]["output"] = "fixed otherwise"  # a correction
    response = client.post("/v1/events", json=changed, headers=auth(keys["ingest"]))
    assert response.status_code == 200, response.text
    body = response.json()
    assert (body["stored"], body["duplicates"]) == (0, 3)
    assert [(e["index"], e["field"]) for e in body["rejected"]] == [(1, "id"), (4, "id"), (5, "id")]
    assert body["rejected"][0]["message"] == (
        f"conflict: id {events[1]['id']!r} is stored already with other content (data); the first "
        "write stays and this event was not stored (an identical retry is fine; new content needs a new id)"
    )
    assert "(thumbs)" in body["rejected"][1]["message"]
    assert "(output)" in body["rejected"][2]["message"]
    task = store.get_task(events[0]["id"])
    assert task.steps[0].data["output"] == "row"
    assert task.feedback[0]["thumbs"] == 1


def test_a_conflict_alone_is_422_and_a_conflict_inside_one_batch_is_reported(client, keys):
    events = task_events(steps=1)
    client.post("/v1/events", json=events, headers=auth(keys["ingest"]))
    step = dict(events[1], output="changed")
    alone = client.post("/v1/events", json=[step], headers=auth(keys["ingest"]))
    assert alone.status_code == 422
    assert alone.json()["rejected"][0]["message"].startswith("conflict:")
    fresh = task_events(steps=1)
    twice = [*fresh, dict(fresh[1], output="second version")]
    response = client.post("/v1/events", json=twice, headers=auth(keys["ingest"]))
    assert (response.json()["stored"], response.json()["duplicates"]) == (3, 0)
    assert [(e["index"], e["field"]) for e in response.json()["rejected"]] == [(3, "id")]


def test_a_finished_task_sent_again_with_another_outcome_is_a_conflict(client, store, keys):
    events = task_events(steps=0)
    client.post("/v1/events", json=events, headers=auth(keys["ingest"]))
    again = dict(events[1], output="another answer", success=False)
    response = client.post("/v1/events", json=[again], headers=auth(keys["ingest"]))
    assert response.status_code == 422
    assert "(output, success)" in response.json()["rejected"][0]["message"]
    assert store.get_task(events[0]["id"]).output == "answer"

"""What the SDK does with each answer of the server: events refused for good go
to the dead-letter file (and never block the queue), transient failures are
retried with jittered backoff and Retry-After, and a batch the server keeps
answering with a 5xx is quarantined. 4xx answers come from a real
``flywheel serve``; 5xx ones from a small fake server at the edge."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import orjson
import pytest
from tests.live import LiveServer

import flywheel
from flywheel.sdk.pipeline import DEAD_LETTER_FILE, Delivery, Pipeline, SendOutcome, Spool


def _client(settings, url, key=None, **overrides):
    fast = settings.model_copy(
        update={"url": url, "api_key": key, "sdk_flush_interval": 0.05, "sdk_timeout": 5.0, **overrides}
    )
    return flywheel.init("delivery", settings=fast)


def _dead_letters(settings) -> list[dict]:
    path = settings.spool_dir / DEAD_LETTER_FILE
    if not path.exists():
        return []
    return [orjson.loads(line) for line in path.read_bytes().splitlines()]


def _posted(fw) -> list[list[str]]:
    """The event ids of every batch the client posts, in order."""
    bodies: list[list[str]] = []

    def record(request):
        if request.url.path == "/v1/events":
            bodies.append([e["id"] for e in orjson.loads(request.content)["events"]])

    fw.transport.client.event_hooks["request"].append(record)
    return bodies


@pytest.fixture
def server(settings, store, tmp_path) -> Iterator[tuple[LiveServer, str]]:
    key, _ = store.create_key("agent", ["ingest"])
    live = LiveServer(settings.database_url, tmp_path / "srv").start()
    yield live, key
    live.stop()


# ------------------------------------------------------- a real server: 4xx


def test_events_the_server_rejects_are_dead_lettered_and_their_neighbours_not_resent(server, settings, store):
    live, key = server
    fw = _client(settings, live.url, key)
    posted = _posted(fw)
    with fw.task(input="where is A7?") as task:
        task.reasoning("look it up")
        task.finish("shipped")
    bad = fw.feedback(task.id, rating=11)  # out of range: the server rejects this one event
    good = fw.feedback(task.id, thumbs=1)
    assert fw.flush(timeout=10)
    assert fw.flush(timeout=1)  # nothing left to send
    fw.close()

    stored = store.get_task(task.id)
    assert stored.output == "shipped" and [f["thumbs"] for f in stored.feedback] == [1]
    [letter] = _dead_letters(settings)
    assert letter["reason"] == "rejected" and letter["status"] == 200
    assert letter["event"]["id"] == bad and letter["event"]["rating"] == 11
    assert "rating" in letter["error"]["field"] + letter["error"]["message"]
    stats = fw.stats()
    assert (stats["rejected"], stats["dead_lettered"], stats["sent"], stats["spool_files"]) == (1, 1, 4, 0)
    sent_ids = [i for body in posted for i in body]
    assert sent_ids.count(good) == 1 and sent_ids.count(bad) == 1  # sent once, never again


def test_a_batch_refused_whole_is_dead_lettered_and_the_queue_moves_on(server, settings, store):
    live, key = server
    fw = _client(settings, live.url, key, sdk_flush_interval=60)  # only flush() sends
    posted = _posted(fw)
    bad = [fw.feedback("some-task", rating=0), fw.feedback("some-task", rating=99)]
    assert fw.flush(timeout=10)  # a 422: every event was rejected
    with fw.task(input="after") as task:
        task.finish("ok")
    assert fw.flush(timeout=10)
    fw.close()

    assert store.get_task(task.id).output == "ok"
    letters = _dead_letters(settings)
    assert [(x["event"]["id"], x["status"], x["reason"]) for x in letters] == [
        (bad[0], 422, "rejected"),
        (bad[1], 422, "rejected"),
    ]
    assert all(x["error"]["message"] for x in letters)
    assert len(posted) == 2 and fw.stats()["dead_lettered"] == 2


def test_an_event_larger_than_the_server_takes_is_dead_lettered_and_the_rest_stored(
    settings, store, tmp_path, monkeypatch
):
    key, _ = store.create_key("agent", ["ingest"])
    monkeypatch.setenv("FLYWHEEL_MAX_BODY_BYTES", "4000")
    live = LiveServer(settings.database_url, tmp_path / "srv").start()
    try:
        fw = _client(settings, live.url, key)
        with fw.task(input="small") as small:
            small.finish("ok")
        with fw.task(input="x" * 10_000) as big:
            pass
        assert fw.flush(timeout=10)
        fw.close()
    finally:
        live.stop()
    assert store.get_task(small.id).output == "ok"
    letters = _dead_letters(settings)
    assert {(x["event"]["id"], x["status"], x["reason"]) for x in letters} == {(big.id, 413, "refused")}
    assert "the limit is 4000" in letters[0]["error"]["message"]
    assert fw.stats()["dropped"] == 0


def test_a_refused_key_keeps_the_events_in_the_spool_not_the_dead_letters(server, settings):
    live, _ = server
    fw = _client(settings, live.url, "fw_not-a-key")
    with fw.task(input="x") as task:
        task.finish("ok")
    assert not fw.flush(timeout=0.5)
    fw.close(timeout=0.2)
    stats = fw.stats()
    assert stats["dead_lettered"] == 0 and stats["spooled"] == 2 and _dead_letters(settings) == []


def test_local_mode_dead_letters_what_the_store_rejects(settings, store):
    fw = flywheel.init("support", settings=settings)
    fw.feedback("some-task", rating=11)
    assert fw.flush(timeout=10)
    fw.close()
    [letter] = _dead_letters(settings)
    assert letter["reason"] == "rejected" and letter["status"] is None
    assert fw.stats()["dead_lettered"] == 1


# ------------------------------------------------- a fake server: 5xx


class FakeServer:
    """Answers ``POST /v1/events`` with what ``answer(body, attempt)`` says and
    ``GET /healthz`` with ``health``; records every request."""

    def __init__(self, answer: Callable[[bytes, int], tuple[int, dict[str, str]]]) -> None:
        self.answer = answer
        self.health = 200
        self.requests: list[tuple[float, bytes]] = []
        fake = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                self._reply(fake.health, {}, b'{"status": "ok"}')

            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers["Content-Length"]))
                fake.requests.append((time.monotonic(), body))
                status, headers = fake.answer(body, len(fake.requests))
                answer = {"rejected": []} if status == 200 else {"error": {"message": "it broke"}}
                self._reply(status, headers, orjson.dumps(answer))

            def _reply(self, status: int, headers: dict[str, str], body: bytes) -> None:
                self.send_response(status)
                for name, value in {"Content-Type": "application/json", **headers}.items():
                    self.send_header(name, value)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args: object) -> None:
                pass

        self.http = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.http.server_address[1]}"
        self.thread = threading.Thread(target=self.http.serve_forever, daemon=True)
        self.thread.start()

    def received(self) -> list[str]:
        return [e["id"] for _, body in self.requests for e in orjson.loads(body)["events"]]

    def close(self) -> None:
        self.http.shutdown()
        self.http.server_close()


@pytest.fixture
def fake() -> Iterator[Callable[..., FakeServer]]:
    servers: list[FakeServer] = []

    def start(answer):
        servers.append(FakeServer(answer))
        return servers[-1]

    yield start
    for server in servers:
        server.close()


def _poison_answer(body: bytes, attempt: int) -> tuple[int, dict[str, str]]:
    return (500, {}) if b"poison" in body else (200, {})


def test_a_batch_the_server_keeps_failing_is_quarantined_and_the_queue_moves_on(settings, fake):
    server = fake(_poison_answer)
    fw = _client(settings, server.url, sdk_batch_size=1, sdk_quarantine_attempts=3, sdk_quarantine_after=0)
    poison = fw.feedback("t1", comment="poison")
    after = [fw.feedback("t1", thumbs=1), fw.feedback("t1", thumbs=-1)]
    assert fw.flush(timeout=20)
    fw.close()

    received = server.received()
    assert received.count(poison) == 3  # tried as often as the bound says, then set aside
    assert received[-2:] == after
    [letter] = _dead_letters(settings)
    assert (letter["reason"], letter["status"], letter["event"]["id"]) == ("quarantined", 500, poison)
    assert "refused 3 times" in letter["error"]["message"] and "it broke" in letter["error"]["message"]
    stats = fw.stats()
    assert (stats["quarantined"], stats["dead_lettered"], stats["spool_files"]) == (1, 1, 0)


def test_nothing_is_quarantined_while_the_server_itself_is_unhealthy(settings, fake):
    server = fake(lambda body, attempt: (503, {}))
    server.health = 503  # e.g. its database is down: every batch fails alike
    fw = _client(settings, server.url, sdk_quarantine_attempts=2, sdk_quarantine_after=0)
    fw.feedback("t1", thumbs=1)
    assert not fw.flush(timeout=1.0)
    assert len(server.requests) >= 3
    server.health = 200
    server.answer = lambda body, attempt: (200, {})
    assert fw.flush(timeout=10)  # it was kept, and goes through once the server is back
    fw.close()
    assert _dead_letters(settings) == [] and fw.stats()["quarantined"] == 0


def test_a_young_batch_is_not_quarantined_however_often_it_failed(settings, fake):
    server = fake(_poison_answer)
    fw = _client(settings, server.url, sdk_quarantine_attempts=1, sdk_quarantine_after=3600)
    fw.feedback("t1", comment="poison")
    assert not fw.flush(timeout=1.0)
    fw.close(timeout=0.2)
    assert len(server.requests) >= 3 and _dead_letters(settings) == []
    assert fw.stats()["spool_files"] == 1


def test_retry_after_is_honoured_even_by_flush(settings, fake):
    server = fake(lambda body, attempt: (429, {"Retry-After": "1"}) if attempt == 1 else (200, {}))
    fw = _client(settings, server.url)
    fw.feedback("t1", thumbs=1)
    assert fw.flush(timeout=10)
    fw.close()
    [(first, _), (second, _)] = server.requests
    assert second - first >= 0.95
    assert fw.stats()["replayed"] == 1 and _dead_letters(settings) == []


class _AlwaysLater:
    """A transport whose server is always away."""

    def __call__(self, body: bytes) -> Delivery:
        return Delivery(SendOutcome.RETRY, message="connection refused")

    def healthy(self) -> bool:
        return False


def test_backoff_is_exponential_with_full_jitter(tmp_path):
    pipeline = Pipeline(
        _AlwaysLater(), Spool(tmp_path, "w"), batch_size=10, queue_size=100, interval=3600, max_backoff=8.0
    )
    try:
        delays: dict[int, list[float]] = {}
        for _ in range(100):
            pipeline._failures = 0
            for failure in range(1, 6):
                pipeline._retry_at = 0.0
                pipeline.put(b'{"type": "feedback"}')
                pipeline.drain()
                delays.setdefault(failure, []).append(pipeline._retry_at - time.monotonic())
        for failure, ceiling in {1: 0.5, 2: 1.0, 3: 2.0, 4: 4.0, 5: 8.0}.items():
            observed = delays[failure]
            assert max(observed) <= ceiling
            assert min(observed) < ceiling * 0.2 and max(observed) > ceiling * 0.8  # spread over [0, ceiling]
    finally:
        pipeline.close(timeout=0)

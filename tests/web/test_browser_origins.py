"""Issue 21, finding 6, in Chromium: a ``--no-auth`` server on loopback is not open
to the pages of other sites (forged forms, cross-site posts, DNS rebinding)."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import orjson
import pytest
from tests.conftest import free_port
from tests.helpers import task_events
from tests.live import LiveServer
from tests.web.conftest import CHROMIUM, CHROMIUM_ARGS
from tests.web.test_browser import queue

from flywheel.ingest import Ingestor

pytestmark = pytest.mark.slow


@pytest.fixture
def open_server(settings) -> Iterator[LiveServer]:
    live = LiveServer(settings.database_url, settings.home, args=("--no-auth",)).start()
    yield live
    live.stop()


@pytest.fixture
def attacker() -> Iterator[dict[str, str]]:
    """Another site (http://localhost:PORT/): serves whatever page ``pages`` holds."""
    pages: dict[str, str] = {}

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802
            body = pages.get(self.path, "").encode()
            self.send_response(200)
            self.send_header("Content-Type", "text/html")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: object) -> None:
            pass

    http = ThreadingHTTPServer(("127.0.0.1", free_port()), Handler)
    thread = threading.Thread(target=http.serve_forever, daemon=True)
    thread.start()
    pages["origin"] = f"http://localhost:{http.server_address[1]}"
    yield pages
    http.shutdown()
    http.server_close()


def _answers(page) -> list[int]:  # type: ignore[no-untyped-def]
    """The statuses of the POSTs the page makes, as the network saw them."""
    statuses: list[int] = []
    page.on("response", lambda r: statuses.append(r.status) if r.request.method == "POST" else None)
    return statuses


def test_a_form_from_an_opaque_origin_cannot_review_on_a_no_auth_server(settings, store, open_server, page):
    events = task_events()
    task_id = events[0]["id"]
    assert Ingestor(store, settings).ingest(events).stored == len(events)
    queue(store, [task_id])
    answers = _answers(page)
    # A data: or file: page, a sandboxed frame: the browser sends "Origin: null".
    page.goto(
        f"data:text/html,<form method=post action={open_server.url}/ui/tasks/{task_id}/review>"
        "<input name=action value=approve></form><script>document.forms[0].submit()</script>"
    )
    page.wait_for_timeout(1500)
    assert answers == [403]  # refused: "a request from an opaque origin"
    assert store.get_task(task_id).annotations == []
    assert store.review_queue("shop")[0]["state"] == "pending"


def test_another_sites_text_plain_post_is_not_stored(settings, store, open_server, page, attacker):
    events = task_events()
    payload = orjson.dumps(events).decode()
    attacker["/"] = (
        "<script>fetch(" + orjson.dumps(f"{open_server.url}/v1/events").decode() + ", {method: 'POST', "
        "mode: 'no-cors', headers: {'Content-Type': 'text/plain'}, body: "
        + orjson.dumps(payload).decode()
        + "})"
        ".then(() => document.title = 'sent', () => document.title = 'failed')</script>"
    )
    answers = _answers(page)
    page.goto(attacker["origin"] + "/")
    page.wait_for_function("document.title !== ''")
    assert page.title() == "sent" and answers == [403]
    assert store.task_exists(events[0]["id"]) is False


def test_a_rebound_name_cannot_read_a_no_auth_servers_tasks(settings, store, open_server):
    from playwright.sync_api import sync_playwright

    events = task_events()
    assert Ingestor(store, settings).ingest(events).stored == len(events)
    # The attacker's name now resolves to this machine: what DNS rebinding achieves.
    rules = "--host-resolver-rules=MAP attacker.example 127.0.0.1"
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=[*CHROMIUM_ARGS, rules], headless=True)
        try:
            page = browser.new_page()
            response = page.goto(f"http://attacker.example:{open_server.port}/v1/tasks")
            assert response is not None and response.status == 403
            assert events[0]["id"] not in page.content()
            own = page.goto(f"http://127.0.0.1:{open_server.port}/v1/tasks")
            assert own is not None and own.status == 200 and events[0]["id"] in page.content()
        finally:
            browser.close()

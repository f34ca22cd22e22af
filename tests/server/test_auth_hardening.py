"""Issue 21, findings 6, 8, 9 and 11 (part): the server in front of a browser.

The host a request names, the site it comes from, the type and size of its body
(``flywheel.server.guard``), sessions that end at logout, and a public API
document that says what the routes answer."""

from __future__ import annotations

import re
from collections.abc import Iterator

import httpx
import orjson
import pytest
from fastapi.testclient import TestClient
from tests.helpers import task_events
from tests.live import LiveServer
from tests.server.conftest import auth

from flywheel.server import create_app


@pytest.fixture
def open_server(settings) -> Iterator[LiveServer]:
    """``flywheel serve --no-auth`` on loopback: the mode a browser could abuse."""
    live = LiveServer(settings.database_url, settings.home, args=("--no-auth",)).start()
    yield live
    live.stop()


def _login(client: TestClient, key: str) -> str:
    page = client.get("/ui/login?next=/ui/review")
    nonce = re.search(r'name="nonce" value="([0-9a-f]+)"', page.text).group(1)  # type: ignore[union-attr]
    done = client.post("/ui/login", data={"key": key, "nonce": nonce, "next": "/ui/review"})
    assert done.status_code == 303, done.text
    return client.cookies["flywheel_session"]


def _peak_rss(live: LiveServer) -> int:
    """The server process's peak resident memory, bytes."""
    assert live.process is not None
    with open(f"/proc/{live.process.pid}/status") as status:
        for line in status:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    raise AssertionError("no VmHWM")


# ------------------------------------------------------------------ finding 6


@pytest.mark.slow
def test_dns_rebinding_cannot_read_tasks_of_a_no_auth_server(open_server, store):
    events = task_events()
    with httpx.Client(base_url=open_server.url) as http:
        assert http.post("/v1/events", content=orjson.dumps(events)).status_code == 200
        # A browser rebound to 127.0.0.1 still names the attacker's site in Host.
        rebound = http.get("/v1/tasks", headers={"Host": f"attacker.example:{open_server.port}"})
        assert rebound.status_code == 403
        assert "host name 'attacker.example" in rebound.json()["error"]["message"]
        assert "FLYWHEEL_ALLOWED_HOSTS" in rebound.json()["error"]["hint"]
        page = http.get("/ui/tasks", headers={"Host": "attacker.example"})
        assert page.status_code == 403 and "text/html" in page.headers["content-type"]
        assert events[0]["id"] not in rebound.text + page.text
        # The names the server answers to: localhost, its bind address, any address.
        for host in ("localhost", f"localhost:{open_server.port}", "127.0.0.1", "[::1]:8420"):
            assert http.get("/v1/tasks", headers={"Host": host}).status_code == 200, host
        assert http.get("/healthz", headers={"Host": "probe.internal"}).status_code == 200


def test_allowed_hosts_setting_admits_names_and_subdomains(settings, store):
    configured = settings.model_copy(update={"allowed_hosts": ["flywheel.example.com", ".corp.example"]})
    with TestClient(create_app(configured, store=store), base_url="http://localhost") as client:
        for host, status in (
            ("flywheel.example.com", 401),  # admitted: then the key is asked for
            ("FLYWHEEL.EXAMPLE.COM.:443", 401),
            ("a.corp.example", 401),
            ("corp.example", 401),
            ("evilcorp.example", 403),
            ("flywheel.example.com.evil.example", 403),
            ("", 403),
        ):
            assert client.get("/v1/tasks", headers={"Host": host}).status_code == status, host


@pytest.mark.slow
def test_a_cross_site_text_plain_post_to_a_no_auth_server_is_not_stored(open_server, store):
    events = task_events()
    with httpx.Client(base_url=open_server.url) as http:
        # What <form enctype="text/plain"> or fetch(..., {mode: "no-cors"}) from another site sends.
        forged = http.post(
            "/v1/events",
            content=orjson.dumps(events),
            headers={"Content-Type": "text/plain", "Origin": "https://attacker.example"},
        )
        assert forged.status_code == 403 and "https://attacker.example" in forged.json()["error"]["message"]
        # Without an Origin (an old browser, a proxy that strips it) the type alone is refused.
        typed = http.post("/v1/events", content=orjson.dumps(events), headers={"Content-Type": "text/plain"})
        assert typed.status_code == 415 and "application/json" in typed.json()["error"]["message"]
        fetched = http.post(
            "/v1/events",
            content=orjson.dumps(events),
            headers={"Content-Type": "application/json", "Sec-Fetch-Site": "cross-site"},
        )
        assert fetched.status_code == 403
        assert http.get("/v1/tasks").json()["tasks"] == []
        # A non-browser client (no Origin) and the server's own origin still get in.
        own = http.post(
            "/v1/events",
            content=orjson.dumps(events),
            headers={"Content-Type": "application/json", "Origin": open_server.url},
        )
        assert own.status_code == 200 and own.json()["stored"] == len(events)


def test_origin_null_form_posts_are_refused_in_every_mode(settings, store):
    task_id = task_events()[0]["id"]
    for auth_on in (True, False):
        app = create_app(settings.model_copy(update={"auth": auth_on}), store=store)
        with TestClient(app, base_url="http://localhost") as client:
            response = client.post(
                f"/ui/tasks/{task_id}/review", data={"action": "approve"}, headers={"Origin": "null"}
            )
            assert response.status_code == 403, auth_on
            assert "opaque origin" in response.text and "text/html" in response.headers["content-type"]
            login = client.post("/ui/login", data={"key": "x", "nonce": "y"}, headers={"Origin": "null"})
            assert login.status_code == 403
            api = client.post(f"/v1/tasks/{task_id}/feedback", json={"thumbs": 1}, headers={"Origin": "null"})
            assert api.status_code == 403 and "opaque origin" in api.json()["error"]["message"]


def test_pages_take_forms_and_the_api_takes_json(client, store, keys):
    events = task_events()
    task_id = events[0]["id"]
    client.post("/v1/events", content=orjson.dumps(events), headers=auth(keys["ingest"]))
    as_form = client.post(f"/v1/tasks/{task_id}/feedback", data={"thumbs": "1"}, headers=auth(keys["ingest"]))
    assert as_form.status_code == 415
    multipart = client.post(
        "/v1/events", files={"f": ("e.json", orjson.dumps(events))}, headers=auth(keys["ingest"])
    )
    assert multipart.status_code == 415
    review = auth(keys["review"])
    as_json = client.post(f"/ui/tasks/{task_id}/review", json={"action": "approve"}, headers=review)
    assert as_json.status_code == 415 and "application/x-www-form-urlencoded" in as_json.text
    charset = client.post(
        f"/v1/tasks/{task_id}/feedback",
        content=b'{"thumbs": 1}',
        headers={**auth(keys["ingest"]), "Content-Type": "application/json; charset=utf-8"},
    )
    assert charset.status_code == 200
    assert store.get_task(task_id).feedback[0]["thumbs"] == 1


# ------------------------------------------------------------------ finding 8


@pytest.mark.slow
def test_the_login_form_refuses_a_huge_body_before_reading_it(settings, store):
    live = LiveServer(settings.database_url, settings.home).start()
    try:
        with httpx.Client(base_url=live.url, timeout=30) as http:
            declared = http.post(
                "/ui/login",
                content=b"key=" + b"a" * (2 * 1024 * 1024),
                headers={"Content-Type": "application/x-www-form-urlencoded"},
            )
            assert declared.status_code == 413 and "limit is 16384" in declared.text
            peak_before = _peak_rss(live)

            def chunked() -> Iterator[bytes]:  # no Content-Length: cut off while it is read
                for _ in range(1600):
                    yield b"a" * 64 * 1024  # 100 MiB in all

            try:
                streamed = http.post(
                    "/ui/login",
                    content=chunked(),
                    headers={"Content-Type": "application/x-www-form-urlencoded"},
                )
                assert streamed.status_code == 413
            except httpx.TransportError:
                pass  # the server answered and closed the connection while we were sending
            # The server never held the body: its peak memory did not grow by its size.
            assert _peak_rss(live) - peak_before < 40 * 1024 * 1024
            assert http.get("/healthz").status_code == 200
    finally:
        live.stop()


def test_label_routes_check_the_key_before_the_body(client, store, keys):
    events = task_events()
    task_id = events[0]["id"]
    client.post("/v1/events", content=orjson.dumps(events), headers=auth(keys["ingest"]))
    garbage = b"\xff{not json" * 100
    for route in ("feedback", "corrections", "annotations"):
        url = f"/v1/tasks/{task_id}/{route}"
        anonymous = client.post(url, content=garbage, headers={"Content-Type": "application/json"})
        assert anonymous.status_code == 401, route
        assert "missing API key" in anonymous.json()["error"]["message"]
        unknown = client.post(url, content=garbage, headers=auth("fw_not-a-key"))
        assert unknown.status_code == 401, route
    # An ingest key may not annotate, whatever it sends.
    refused = client.post(f"/v1/tasks/{task_id}/annotations", content=garbage, headers=auth(keys["ingest"]))
    assert refused.status_code == 403
    # With a key that may, the body is read and found wanting.
    bad = client.post(f"/v1/tasks/{task_id}/feedback", content=garbage, headers=auth(keys["ingest"]))
    assert bad.status_code == 400 and bad.json()["error"]["type"] == "InvalidInput"


def test_label_routes_refuse_an_oversize_body(settings, store, keys):
    small = settings.model_copy(update={"max_body_bytes": 2048})
    with TestClient(create_app(small, store=store), base_url="http://localhost") as client:
        big = {"thumbs": -1, "comment": "x" * 4096}
        response = client.post("/v1/tasks/t1/feedback", json=big, headers=auth(keys["ingest"]))
        assert response.status_code == 413 and "the limit is 2048" in response.json()["error"]["message"]

        def chunks() -> Iterator[bytes]:
            yield orjson.dumps(big)

        streamed = client.post(
            "/v1/tasks/t1/feedback",
            content=chunks(),
            headers={**auth(keys["ingest"]), "Content-Type": "application/json"},
        )
        assert streamed.status_code == 413


# ------------------------------------------------------------------ finding 9


def test_logout_ends_the_session_on_the_server(settings, store):
    key, record = store.create_key("ana", ["review"])
    app = create_app(settings, store=store)
    with TestClient(app, base_url="http://localhost", follow_redirects=False) as client:
        cookie = _login(client, key)
        with TestClient(app, base_url="http://localhost", follow_redirects=False) as elsewhere:
            other = _login(elsewhere, key)
        assert client.get("/ui/tasks").status_code == 200
        csrf = re.search(r'name="csrf" value="([0-9a-f]+)"', client.get("/ui/tasks").text).group(1)  # type: ignore[union-attr]
        assert client.post("/ui/logout", data={"csrf": csrf}).status_code == 303
    with TestClient(app, base_url="http://localhost", follow_redirects=False) as thief:
        thief.cookies.set("flywheel_session", cookie)  # a copy kept from before the logout
        assert thief.get("/ui/tasks").status_code == 303  # to the login page
        refused = thief.post("/ui/tasks/t/review", data={"action": "approve", "csrf": csrf})
        assert refused.status_code == 401
        thief.cookies.set("flywheel_session", other)  # another session of the same key lives on
        assert thief.get("/ui/tasks").status_code == 200
    logouts = [e for e in store.audit_events("api_key") if e.action == "ui.logout"]
    assert [(e.actor, e.record_id) for e in logouts] == [("key:ana", record.id)]


def test_a_tampered_or_old_format_session_cookie_is_refused(settings, store):
    key, record = store.create_key("ana", ["review"])
    app = create_app(settings, store=store)
    with TestClient(app, base_url="http://localhost", follow_redirects=False) as client:
        cookie = _login(client, key)
        key_id, expiry, session, mac = cookie.split(".")
        old_format = f"{key_id}.{expiry}.{mac}"
        longer = f"{key_id}.{int(expiry) + 10**6}.{session}.{mac}"
    with TestClient(app, base_url="http://localhost", follow_redirects=False) as client:
        assert client.get("/ui/tasks", headers={"Cookie": f"flywheel_session={cookie}"}).status_code == 200
        for forged in (old_format, longer, f"{key_id}.{expiry}.other.{mac}"):
            response = client.get("/ui/tasks", headers={"Cookie": f"flywheel_session={forged}"})
            assert response.status_code == 303, forged


# ------------------------------------------------------------------ finding 11


def test_a_nul_in_a_path_or_query_parameter_is_a_400_not_a_database_error(client, keys):
    """PostgreSQL cannot compare a text with a NUL (schemathesis found the 500 on
    GET /v1/stats?workload=...%00); no name, id or filter holds one."""
    auth = {"Authorization": f"Bearer {keys['admin']}"}
    for url in ("/v1/stats?workload=shop%00", "/v1/tasks?session_id=a%00b", "/v1/tasks/t%00"):
        answer = client.get(url, headers=auth)
        assert answer.status_code == 400, (url, answer.text)
        assert "NUL character" in answer.json()["error"]["message"]
    assert client.get("/v1/stats?workload=shop", headers=auth).status_code == 200


def test_the_api_document_and_reference_are_public_and_say_what_routes_answer(client):
    document = client.get("/openapi.json")
    assert document.status_code == 200  # no key: it describes the code, not the data
    paths = document.json()["paths"]
    feedback = paths["/v1/tasks/{task_id}/feedback"]["post"]
    assert {"400", "401", "403", "404", "413", "415"} <= set(feedback["responses"])
    assert "422" not in feedback["responses"]  # malformed input is a 400 here
    assert {"400", "401", "403", "413", "415", "422"} <= set(paths["/v1/events"]["post"]["responses"])
    assert {"401", "403", "404"} <= set(paths["/v1/tasks/{task_id}"]["get"]["responses"])
    assert "401" not in paths["/healthz"]["get"]["responses"]
    assert feedback["requestBody"]["content"]["application/json"]["schema"] == {
        "$ref": "#/components/schemas/FeedbackRequest"
    }
    assert "Idempotency-Key" in [p["name"] for p in feedback["parameters"]]
    page = client.get("/docs")
    assert page.status_code == 200 and "text/html" in page.headers["content-type"]
    csp = page.headers["content-security-policy"]
    assert "script-src 'self'" in csp and "default-src 'self'" in csp
    assert "cdn" not in page.text and "POST /v1/tasks/{task_id}/feedback" in page.text
    assert client.get("/redoc").status_code == 404


def test_every_html_answer_carries_a_csp(client, keys):
    for path, headers in (
        ("/ui/login", {}),
        ("/docs", {}),
        ("/ui/tasks/nope", auth(keys["review"])),  # a page's 404
        ("/ui/tasks", {"Host": "attacker.example"}),  # the guard's 403
    ):
        response = client.get(path, headers=headers)
        assert "text/html" in response.headers["content-type"], path
        assert "frame-ancestors 'none'" in response.headers["content-security-policy"], path
        assert response.headers["x-content-type-options"] == "nosniff"

"""The pages over HTTP: login, sessions, CSRF, scopes, filters, review actions."""

import html
import json
import re
import uuid

import pytest
from fastapi.testclient import TestClient
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.proto.trace.v1.trace_pb2 import ResourceSpans, ScopeSpans, Span
from tests.helpers import now
from tests.server.test_otlp import ROOT, T0, TRACE, kv
from tests.web.test_browser import log_task, queue

import flywheel
from flywheel.ingest import Ingestor
from flywheel.records import new_id
from flywheel.server import create_app


@pytest.fixture
def app_client(settings, store):
    with TestClient(create_app(settings, store=store), base_url="http://localhost") as client:
        yield client


@pytest.fixture
def tasks(settings):
    fw = flywheel.init("shop", settings=settings)
    ids = [
        log_task(
            fw,
            f"weather in town {i}?",
            output=f"sunny in town {i}",
            calls=[{"name": "get_weather", "arguments": {"city": f"town {i}"}}],
            session=f"s{i}",
            comment="bad answer" if i == 1 else None,
            docs=[{"id": "kb-1", "content": "weather policy", "score": 0.4}],
        )
        for i in range(3)
    ]
    fw.flush()
    fw.close()
    return ids


def login(client, key):
    page = client.get("/ui/login?next=/ui/review")
    nonce = re.search(r'name="nonce" value="([0-9a-f]+)"', page.text).group(1)
    return client.post(
        "/ui/login", data={"key": key, "nonce": nonce, "next": "/ui/review"}, follow_redirects=False
    )


def csrf_of(client, path):
    return re.search(r'name="csrf" value="([0-9a-f]+)"', client.get(path).text).group(1)


def test_pages_need_a_reviewer_and_send_a_csp(app_client, store, tasks):
    response = app_client.get(f"/ui/tasks/{tasks[0]}", follow_redirects=False)
    assert response.status_code == 303 and response.headers["location"].startswith("/ui/login?next=")
    ingest, _ = store.create_key("agent", ["ingest"])
    assert app_client.get("/ui/tasks", headers={"Authorization": f"Bearer {ingest}"}).status_code == 403
    refused = login(app_client, ingest)
    assert refused.status_code == 401 and "cannot review" in refused.text
    assert "flywheel_session" not in app_client.cookies
    review, _ = store.create_key("ana", ["review"])
    done = login(app_client, review)
    assert done.status_code == 303 and done.headers["location"] == "/ui/review"
    page = app_client.get(f"/ui/tasks/{tasks[0]}")
    assert page.status_code == 200 and "sunny in town 0" in page.text
    assert "script-src 'self'" in page.headers["content-security-policy"]
    assert "frame-ancestors 'none'" in page.headers["content-security-policy"]


def test_forms_need_the_csrf_token_of_the_session(app_client, store, tasks):
    key, record = store.create_key("ana", ["review"])
    login(app_client, key)
    url = f"/ui/tasks/{tasks[0]}/review"
    forged = app_client.post(url, data={"action": "approve"}, follow_redirects=False)
    assert forged.status_code == 403 and "CSRF" in forged.text
    wrong = app_client.post(url, data={"action": "approve", "csrf": "0" * 64}, follow_redirects=False)
    assert wrong.status_code == 403
    token = csrf_of(app_client, f"/ui/tasks/{tasks[0]}")
    ok = app_client.post(
        url, data={"action": "approve", "csrf": token, "rationale": "fine"}, follow_redirects=False
    )
    assert ok.status_code == 303
    label = store.get_task(tasks[0]).annotations[-1]
    assert label["kind"] == "adoption" and label["data"] == {
        "kind": "adoption",
        "adopted": True,
        "rationale": "fine",
    }
    elsewhere = app_client.post(
        url, data={"action": "approve", "csrf": token}, headers={"Origin": "https://evil.example"}
    )
    assert elsewhere.status_code == 403 and "from https://evil.example" in elsewhere.text
    store.revoke_key(record.id)  # revoking the key ends its sessions
    assert app_client.get("/ui/tasks", follow_redirects=False).status_code == 303


def test_every_annotation_kind_and_bad_input_says_what_is_wrong(app_client, store, tasks):
    key, _ = store.create_key("ana", ["review"])
    bearer = {"Authorization": f"Bearer {key}"}  # scripts: no cookie, no CSRF token

    def act(task, **form):
        return app_client.post(f"/ui/tasks/{task}/review", data=form, headers=bearer, follow_redirects=False)

    assert act(tasks[0], action="adoption", adopted="no", rationale="user rewrote it").status_code == 303
    assert act(tasks[0], action="knowledge_relevance", document_id="kb-1", relevant="no").status_code == 303
    assert act(tasks[0], action="missing_knowledge", text="the storm warning of today").status_code == 303
    assert act(tasks[0], action="preference", preferred="a", reason="clearer").status_code == 303
    assert act(tasks[0], action="correct_output", output="rainy in town 0").status_code == 303
    kinds = [a["kind"] for a in store.get_task(tasks[0]).annotations]
    assert kinds == ["adoption", "knowledge_relevance", "missing_knowledge", "preference"]
    assert store.get_task(tasks[0]).corrections[-1]["output"] == "rainy in town 0"

    bad = act(tasks[1], action="correct_tool_call", tool_calls='[{"name": "get_weather", "arguments": {}}]')
    assert bad.status_code == 400 and "&#39;city&#39; is a required property" in bad.text
    assert act(tasks[1], action="correct_tool_call", tool_calls="[{oops").status_code == 400
    unknown = act(tasks[1], action="correct_tool_call", tool_calls='[{"name": "rm_rf", "arguments": {}}]')
    assert unknown.status_code == 400 and "not a tool this task offered" in unknown.text
    assert act(tasks[1], action="missing_knowledge", text="").status_code == 400
    assert act(tasks[1], action="preference", preferred="maybe").status_code == 400
    assert act(tasks[1], action="delete_everything").status_code == 400
    assert store.get_task(tasks[1]).annotations == [] and store.get_task(tasks[1]).corrections == []
    reviewers = {e.actor for e in store.audit_events("task") if e.action.startswith("review.")}
    assert reviewers == {"key:ana"}


def test_the_queue_hands_out_the_next_item_after_each_action(app_client, store, tasks):
    key, _ = store.create_key("ana", ["review"])
    bearer = {"Authorization": f"Bearer {key}"}
    queue(store, tasks)
    first = app_client.get("/ui/review/next?workload=shop", headers=bearer, follow_redirects=False)
    assert first.headers["location"].startswith(f"/ui/tasks/{tasks[0]}?queue=shop")
    after = app_client.post(
        f"/ui/tasks/{tasks[0]}/review",
        data={"action": "reject", "queue": "shop"},
        headers=bearer,
        follow_redirects=False,
    )
    assert after.headers["location"].startswith(f"/ui/tasks/{tasks[1]}?")
    page = app_client.get("/ui/review?workload=shop", headers=bearer)
    assert "backlog 2" in page.text and "reviewed in the last day 1" in page.text


def test_the_task_browser_filters(app_client, store, tasks):
    key, _ = store.create_key("ana", ["review"])
    bearer = {"Authorization": f"Bearer {key}"}
    queue(store, tasks[2:])

    def listed(query):
        text = app_client.get(f"/ui/tasks?{query}", headers=bearer).text
        return {t for t in tasks if f"/ui/tasks/{t}" in text}

    assert listed("") == set(tasks)
    assert listed("workload=shop&outcome=failure") == set(tasks)
    assert listed("outcome=success") == set()
    assert listed("feedback=negative") == {tasks[1]}
    assert listed("feedback=none") == {tasks[0], tasks[2]}
    assert listed("rule=low_confidence") == {tasks[2]}
    assert listed("search=town+2") == {tasks[2]}
    assert listed("workload=other") == set()
    assert app_client.get("/ui/tasks?since=yesterday", headers=bearer).status_code == 400


def replies_on(text):
    """(reply texts, [(tool name, arguments text)]) of a task page, unescaped."""
    texts = re.findall(r'<pre class="content reply-text">(.*?)</pre>', text, re.S)
    calls = re.findall(
        r'tool call <span class="mono">(.*?)</span></div><pre class="content reply-call">(.*?)</pre>',
        text,
        re.S,
    )
    return [html.unescape(t) for t in texts], [
        (html.unescape(n), json.loads(html.unescape(a))) for n, a in calls
    ]


GENAI_QUESTION = [
    {"role": "system", "parts": [{"type": "text", "content": "You are a weather bot."}]},
    {"role": "user", "parts": [{"type": "text", "content": "Weather in <Paris>?"}]},
]


def test_a_task_in_the_shapes_otlp_stores_shows_its_tool_call_and_text(app_client, store, settings):
    """GenAI semantic-convention messages with parts, and a response that is a list of
    messages (as OpenInference's output messages are stored): the page reads the
    assistant's reply out of each, escaped."""
    task_id, at = new_id(), now()
    step = {"task_id": task_id, "started_at": at, "ended_at": at}
    events = [
        {"type": "task_started", "id": task_id, "workload": "otel", "session_id": "s", "started_at": at},
        {
            "type": "llm_call",
            "id": new_id(),
            "seq": 1,
            **step,
            "model": "gpt-4o",
            "messages": GENAI_QUESTION,
            "response": [
                {
                    "role": "assistant",
                    "parts": [
                        {"type": "text", "content": "Let me look that up."},
                        {
                            "type": "tool_call",
                            "id": "call_1",
                            "name": "get_weather",
                            "arguments": {"city": "Paris"},
                        },
                    ],
                    "finish_reason": "tool_call",
                }
            ],
        },
        {
            "type": "tool_call",
            "id": new_id(),
            "seq": 2,
            **step,
            "name": "get_weather",
            "arguments": {"city": "Paris"},
        },
        {
            "type": "llm_call",
            "id": new_id(),
            "seq": 3,
            **step,
            "model": "gpt-4o",
            "messages": GENAI_QUESTION,
            "response": [
                {"role": "user", "content": "Weather in <Paris>?"},
                {"role": "assistant", "content": "It is 18C in <Paris>."},
            ],
        },
    ]
    assert not Ingestor(store, settings).ingest(events).rejected
    key, _ = store.create_key("ana", ["review"])
    page = app_client.get(f"/ui/tasks/{task_id}", headers={"Authorization": f"Bearer {key}"})
    assert page.status_code == 200
    texts, calls = replies_on(page.text)
    assert texts == ["Let me look that up.", "It is 18C in <Paris>."]
    assert calls == [("get_weather", {"city": "Paris"})]
    assert "It is 18C in &lt;Paris&gt;." in page.text and "<Paris>" not in page.text
    prefilled = re.search(r'<textarea id="tool_calls"[^>]*>(.*?)</textarea>', page.text, re.S).group(1)
    assert json.loads(html.unescape(prefilled)) == [{"name": "get_weather", "arguments": {"city": "Paris"}}]
    sides = re.findall(r'<div class="label">([AB]: [^<]*)</div>', page.text)
    assert sides == ["A: model response (step 1)", "B: model response (step 3)"]


def test_a_genai_trace_posted_over_otlp_shows_its_tool_call_and_text(app_client, store):
    """The same through /v1/traces: a chat span in the GenAI conventions (content
    captured as span attributes) whose reply is a text and a tool call."""
    ingest, _ = store.create_key("agent", ["ingest"])
    review, _ = store.create_key("ana", ["review"])
    output = [
        {
            "role": "assistant",
            "parts": [
                {"type": "text", "content": "Checking <the> forecast."},
                {"type": "tool_call", "id": "call_1", "name": "get_weather", "arguments": {"city": "Oslo"}},
            ],
            "finish_reason": "tool_call",
        }
    ]
    chat = Span(
        trace_id=TRACE,
        span_id=b"\x02" * 8,
        parent_span_id=ROOT,
        name="chat gpt-4o",
        start_time_unix_nano=T0 + 1,
        end_time_unix_nano=T0 + 2_000_000,
        attributes=[
            kv("gen_ai.operation.name", "chat"),
            kv("gen_ai.request.model", "gpt-4o"),
            kv("gen_ai.input.messages", json.dumps(GENAI_QUESTION)),
            kv("gen_ai.output.messages", json.dumps(output)),
        ],
    )
    root = Span(
        trace_id=TRACE,
        span_id=ROOT,
        name="invoke_agent weather",
        start_time_unix_nano=T0,
        end_time_unix_nano=T0 + 9_000_000,
        attributes=[kv("gen_ai.operation.name", "invoke_agent")],
    )
    export = ExportTraceServiceRequest(
        resource_spans=[ResourceSpans(scope_spans=[ScopeSpans(spans=[root, chat])])]
    )
    posted = app_client.post(
        "/v1/traces",
        content=export.SerializeToString(),
        headers={"Authorization": f"Bearer {ingest}", "Content-Type": "application/x-protobuf"},
    )
    assert posted.status_code == 200
    page = app_client.get(
        f"/ui/tasks/{uuid.UUID(bytes=TRACE)}", headers={"Authorization": f"Bearer {review}"}
    )
    assert page.status_code == 200
    texts, calls = replies_on(page.text)
    assert texts == ["Checking <the> forecast."]
    assert calls == [("get_weather", {"city": "Oslo"})]
    assert "<the>" not in page.text

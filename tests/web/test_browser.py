"""The pages in Chromium: untrusted content never runs, a reviewer works with the
keyboard only, the dashboard draws its charts from the store's numbers."""

from __future__ import annotations

import json

import pytest
from tests.web.conftest import screenshot

import flywheel
from flywheel.cycle import list_cycles

XSS = [
    "<script>window.__xss=1;alert(1)</script>",
    '<img src=x onerror="window.__xss=2;alert(2)">',
    '<a href="javascript:window.__xss=3">click</a>',
    "<svg onload=window.__xss=4><circle r=5 /></svg>",
    '"><iframe srcdoc="<script>parent.__xss=5</script>">',
    "</pre></td></table><script>window.__xss=6</script>",
    "<body onload=window.__xss=7>",
    '<div style="background:url(javascript:window.__xss=8)">x</div>',
    "{{7*7}} ${7*7} <% 7*7 %>",
    "<scr<script>ipt>window.__xss=9</scr</script>ipt>",
    "<math><mtext><table><mglyph><style><img src=x onerror=window.__xss=10>",
    "\u202eRTL override \u05e9\u05dc\u05d5\u05dd \u0645\u0631\u062d\u0628\u0627",
    "x" * 20_000,  # a very long line
    "<b>unclosed <i>broken <table><tr><td>html",
]

TOOLS = [
    {
        "type": "function",
        "function": {
            "name": "get_weather",
            "description": "Weather in a city",
            "parameters": {
                "type": "object",
                "properties": {"city": {"type": "string"}, "days": {"type": "integer"}},
                "required": ["city"],
            },
        },
    }
]


def log_task(fw, question, *, output, calls, session="s1", docs=(), reasoning=None, comment=None):
    with fw.task(session_id=session, input=question) as task:
        task.llm_call(
            model="m",
            messages=[{"role": "user", "content": question}],
            tools=TOOLS,
            response={
                "role": "assistant",
                "content": None,
                "tool_calls": [
                    {
                        "id": f"c{i}",
                        "type": "function",
                        "function": {"name": c["name"], "arguments": json.dumps(c["arguments"])},
                    }
                    for i, c in enumerate(calls)
                ],
            },
        )
        if reasoning:
            task.reasoning(reasoning)
        if docs:
            task.retrieval(query=question, documents=list(docs))
        task.tool_call(name="get_weather", arguments=calls[0]["arguments"], output=output, error=None)
        task.finish(output=output, success=False)
    if comment:
        fw.feedback(task.id, thumbs=-1, comment=comment)
    return task.id


def queue(store, task_ids, workload="shop"):
    from flywheel.records import utcnow
    from flywheel.store import tables as t

    with store.engine.begin() as conn:
        for i, task_id in enumerate(task_ids):
            conn.execute(
                t.review_items.insert(),
                {
                    "id": f"r{i}",
                    "task_id": task_id,
                    "workload": workload,
                    "reason": f"low confidence <b>{i}</b>",
                    "rule": "low_confidence",
                    "priority": 1.0 - i / 100,
                    "state": "pending",
                    "created_at": utcnow(),
                    "updated_at": utcnow(),
                },
            )


def login(page, server, key):
    page.goto(f"{server.url}/ui/review")
    assert "/ui/login" in page.url
    page.fill("#key", key)
    page.keyboard.press("Enter")
    page.wait_for_url("**/ui/review**")


@pytest.mark.slow
def test_logged_xss_payloads_never_run_and_the_pages_still_render(settings, store, server, page):
    key, _ = store.create_key("ana", ["review"])
    fw = flywheel.init("shop", settings=settings)
    ids = []
    for i, payload in enumerate(XSS):
        ids.append(
            log_task(
                fw,
                payload,
                output=payload,
                calls=[{"name": "get_weather", "arguments": {"city": payload[:300]}}],
                session=f"s{i}",
                docs=[{"id": payload[:60], "content": payload, "score": 0.5}],
                reasoning=payload,
                comment=payload[:500],
            )
        )
    fw.flush()
    fw.close()
    queue(store, ids[:3])
    dialogs = []
    page.on("dialog", lambda d: (dialogs.append(d.message), d.dismiss()))
    login(page, server, key)
    for url in ["/ui/tasks", "/ui/tasks?search=script", "/ui/review"] + [f"/ui/tasks/{i}" for i in ids]:
        response = page.goto(server.url + url)
        assert response.status == 200, url
        assert "script-src 'self'" in response.headers["content-security-policy"]
        assert page.evaluate("window.__xss") is None, url
        assert page.locator("h1").count() == 1 and page.locator("main").is_visible(), url
    assert dialogs == []
    page.goto(f"{server.url}/ui/tasks/{ids[0]}")
    assert XSS[0] in page.locator("#final-output").inner_text()  # shown as text, not run
    assert page.locator("main script, main iframe, main svg circle, main img").count() == 0
    screenshot(page, "task")


@pytest.mark.slow
def test_a_reviewer_corrects_a_tool_call_and_a_preference_with_the_keyboard_only(
    settings, store, server, page
):
    key, record = store.create_key("ana", ["review"])
    fw = flywheel.init("shop", settings=settings)
    ids = [
        log_task(
            fw,
            f"weather in city {i}?",
            output=f"It rains in city {i}",
            calls=[{"name": "get_weather", "arguments": {"city": "Wrongville"}}],
            session=f"s{i}",
        )
        for i in range(3)
    ]
    fw.flush()
    fw.close()
    queue(store, ids)
    login(page, server, key)
    screenshot(page, "review-queue")
    page.keyboard.press("n")  # start reviewing: the first item
    page.wait_for_url(f"**/ui/tasks/{ids[0]}**")
    screenshot(page, "review-item")
    page.keyboard.press("t")  # the tool-call editor
    page.keyboard.press("Control+a")
    page.keyboard.type('[{"name": "get_weather", "arguments": {"city": 7}}]')
    page.keyboard.press("Control+Enter")  # wrong type: the page says so and keeps the input
    page.wait_for_selector("#form-error")
    assert "7 is not of type 'string'" in page.locator("#form-error").inner_text()
    assert '"city": 7' in page.locator("#tool_calls").input_value()
    page.keyboard.press("t")
    page.keyboard.press("Control+a")
    page.keyboard.type('[{"name": "get_weather", "arguments": {"city": "city 0", "days": 1}}]')
    page.keyboard.press("Control+Enter")
    page.wait_for_url(f"**/ui/tasks/{ids[1]}**")  # "next item" after the action
    assert "Saved: correct tool call" in page.locator(".flash").inner_text()
    page.keyboard.press("2")  # prefer response B (the model's calls) over A (the output)
    page.wait_for_url(f"**/ui/tasks/{ids[1]}?**done=preference**")
    assert [e for e in page.js_errors if "400 (Bad Request)" not in e] == []  # the 400 was ours

    corrected = store.get_task(ids[0])
    assert corrected.corrections[-1]["tool_calls"] == [
        {"name": "get_weather", "arguments": {"city": "city 0", "days": 1}}
    ]
    assert corrected.corrections[-1]["author"] == "key:ana"
    preferred = store.get_task(ids[1]).annotations[-1]
    assert preferred["kind"] == "preference" and preferred["data"]["preferred"] == "b"
    assert preferred["author"] == "key:ana"
    audit = {(e.action, e.record_id, e.actor) for e in store.audit_events("task")}
    assert ("review.correct_tool_call", ids[0], "key:ana") in audit
    assert ("review.preference", ids[1], "key:ana") in audit
    states = {i["task_id"]: i["state"] for i in store.review_queue("shop", state="corrected")}
    assert states == {ids[0]: "corrected"}


@pytest.mark.slow
def test_the_dashboard_draws_its_charts_from_the_store(settings, store, server, page, tmp_path):
    from tests.cycle.test_cycle import Student, policy, serve

    from flywheel.cycle import run_cycle
    from flywheel.workloads.bfcl import load_bfcl

    items = load_bfcl(["simple_python"], limit=60, seed=2)
    student = Student({item.question: item.reference_calls() for item in items})
    fw = flywheel.init("bfcl", settings=settings)
    chosen = policy(tmp_path, watch_seconds=0, watch_min_tasks=0)
    for n in range(2):
        serve(fw, items, student, 100, seed=n)
        run_cycle(store, "bfcl", chosen, model_for=lambda config: student)
    fw.close()
    key, _ = store.create_key("ana", ["review"])
    login(page, server, key)
    page.goto(f"{server.url}/ui/dashboard?workload=bfcl")
    try:
        page.locator("body[data-charts-ready], .chart.failed").first.wait_for(
            state="attached", timeout=30_000
        )
    except Exception:
        raise AssertionError(f"the charts did not draw: {page.js_errors}") from None
    assert page.locator(".chart.failed").count() == 0, page.locator(".chart.failed").all_inner_texts()
    charts = page.locator("figure.chart")
    assert charts.count() == 7 and page.locator("figure.chart svg.marks").count() == 7
    assert page.js_errors == []
    cycles = list_cycles(store, "bfcl")
    rows = page.locator("#cycles tbody tr")
    assert rows.count() == len(cycles) == 2
    for row, cycle in zip(rows.all(), cycles, strict=True):
        cells = row.locator("td").all_inner_texts()
        assert cells[0] == str(cycle["number"])
        assert cells[2] == cycle["result"]["outcome"].replace("_", " ")
        assert cells[9] == cycle["result"]["metrics"]["bottleneck"]
    assert page.locator("#bottleneck").inner_text() == cycles[-1]["result"]["metrics"]["bottleneck"]
    screenshot(page, "dashboard")

    # why: each candidate with the estimate the gate judged, labelled on the gain chart too
    from flywheel.cycle.metrics import gate_verdicts

    verdicts = [v for c in cycles for v in gate_verdicts(store, cycles)[c["id"]]]
    shown = page.locator("#verdicts tbody tr")
    assert shown.count() == len(verdicts) > 0
    for row, verdict in zip(shown.all(), verdicts, strict=True):
        judged = row.locator("td.judged").inner_text()
        assert judged.startswith(f"{verdict['estimate']} {100 * verdict['gain']:+.1f} [")
        assert row.locator("td.status").inner_text() == verdict["status"]
        assert row.locator("td.refused-by").inner_text() == (verdict["refused_by"] or "")
    labels = page.locator("#chart-gain svg text").all_text_contents()
    assert sum("(judged)" in label for label in labels) == len(verdicts)
    # offline vs live: one row per version measured or served, with its live rates
    alignment = page.locator("#alignment tbody tr")
    assert alignment.count() >= 2 and page.locator("#alignment").is_visible()
    assert page.locator("#alignment td.verdict").first.inner_text()
    page.locator("#why").scroll_into_view_if_needed()
    page.evaluate("document.getElementById('why').scrollIntoView()")
    screenshot(page, "dashboard-why")

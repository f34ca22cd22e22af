"""Say why, and offline against live: the dashboard, ``flywheel report`` (its
text and its static HTML) and ``flywheel cycle show`` show the estimate the
gate judged and the check that refused a candidate, and flag a version whose
offline gain does not show live."""

from __future__ import annotations

import hashlib
import html
import json
import re

import pytest
from fastapi.testclient import TestClient
from tests.cli.test_cli import cli  # noqa: F401  (fixture)
from tests.cycle.test_cycle import policy, serve
from tests.cycle.test_cycle_metrics import aligned_workload

import flywheel
from flywheel.cycle import get_cycle, run_cycle
from flywheel.models.base import ChatResult, last_user_text
from flywheel.server import create_app
from flywheel.store.history import evaluation_results
from flywheel.workloads.bfcl import load_bfcl


class Stubborn:
    """Right on a fixed third of the questions, examples or not: no candidate
    built from its traffic can beat it, so the gate refuses them all."""

    name = "stubborn-student"

    def __init__(self, answers):
        self.answers = answers

    def complete(self, request):
        question = last_user_text(request.messages)
        lucky = hashlib.sha256(question.encode()).digest()[0] < 85
        calls = (
            [dict(c) for c in self.answers[question]] if lucky else [{"name": "wrong_tool", "arguments": {}}]
        )
        return ChatResult(calls, "", self.name, 80, 12, 0.01, 0.9, None)


@pytest.fixture
def app_client(settings, store):
    with TestClient(create_app(settings, store=store), base_url="http://localhost") as client:
        key, _ = store.create_key("ana", ["review"])
        client.headers["Authorization"] = f"Bearer {key}"
        yield client


def pts(value):
    return f"{100 * value:+.1f}"


def text_of(page: str) -> str:
    """A page's text as a reader sees it: tags dropped, entities decoded, spaces collapsed."""
    return " ".join(html.unescape(re.sub(r"<[^>]+>", " ", page)).split())


def test_a_gate_failed_cycle_says_why_everywhere(settings, store, tmp_path, app_client, cli, monkeypatch):  # noqa: F811
    items = load_bfcl(["simple_python"], limit=60, seed=2)
    student = Stubborn({item.question: item.reference_calls() for item in items})
    fw = flywheel.init("bfcl", settings=settings)
    serve(fw, items, student, 80, seed=0)
    fw.close()
    chosen = policy(tmp_path, watch_seconds=0, watch_min_tasks=0)
    run = run_cycle(store, "bfcl", chosen, model_for=lambda config: student)
    assert run.outcome == "gate_failed", run.result

    evaluate = {s["stage"]: s["outputs"] for s in get_cycle(store, run.id)["stages"]}["evaluate"]
    [entry] = evaluate["evaluations"]
    record = evaluation_results(store, [entry["evaluation"]])[entry["evaluation"]]
    decision = record["gate"]
    refused = next(c["check"] for c in decision["checks"] if not c["passed"])
    kind = (
        "reweighted"
        if record["reweighted"] and decision["test"]["name"].startswith("reweighted")
        else "plain"
    )
    ci = record["reweighted"]["ci95"] if kind == "reweighted" else record["ci95"]
    judged = f"{kind} {pts(decision['gain'])} [{pts(ci[0])}, {pts(ci[1])}]"

    # the dashboard: the cycle row and the table of candidates
    page = app_client.get("/ui/dashboard?workload=bfcl")
    assert page.status_code == 200
    body = page.text
    cycles = text_of(body[body.index('<table id="cycles">') : body.index('<h2 id="why">')])
    assert judged in cycles and f"refused: {refused}" in cycles
    verdicts = text_of(body[body.index('<table id="verdicts">') : body.index('<h2 id="offline-vs-live">')])
    assert f"few_shot {entry['version']} refused {judged}" in verdicts
    assert refused in verdicts and f"McNemar p = {entry['mcnemar_p']:.3g}" in verdicts
    power = decision["power"]
    assert f"smallest detectable gain {power['mde']:.1%} at n=" in verdicts
    if kind == "reweighted":  # the plain estimate beside it, named as such
        assert (
            f"plain {pts(record['difference'])} [{pts(record['ci95'][0])}, {pts(record['ci95'][1])}]"
            in cycles
        )
    spec = json.loads(html.unescape(re.search(r'id="chart-specs">(.*?)</script>', body, re.S).group(1)))
    point = spec["gain"]["data"]["values"][0]
    assert (point["estimate"], point["gain"], point["low"], point["high"]) == (
        f"judged: {kind}",
        decision["gain"],
        *ci,
    )
    assert point["refused_by"] == refused and point["status"] == "refused"

    # flywheel report: the text, its JSON, and the static page
    monkeypatch.setenv("COLUMNS", "1200")  # one table row per line: the texts stay whole
    out = tmp_path / "report"
    text = cli("report", "--workload", "bfcl", "--out", str(out), "--no-png").stdout
    assert "why: the gate on each candidate" in text and refused in text and judged in text
    assert "offline vs live, per version" in text
    report = json.loads(cli("report", "--workload", "bfcl", "--out", str(out), "--no-png", "--json").stdout)
    [verdict] = report["candidates"]
    assert (verdict["estimate"], verdict["gain"], verdict["refused_by"]) == (kind, decision["gain"], refused)
    static = text_of((out / "index.html").read_text())
    assert judged in static and refused in static
    assert json.loads((out / "data.json").read_text())["candidates"][0]["refused_by"] == refused

    # flywheel cycle show: the estimate judged and the check that refused
    shown = cli("cycle", "show", "bfcl#1").stdout
    assert f"gain judged ({kind}) {decision['gain']:+.1%}" in shown and f"refused by: {refused}" in shown


def test_the_dashboard_and_report_flag_an_offline_gain_not_seen_live(
    settings,
    store,
    tmp_path,
    app_client,
    cli,  # noqa: F811
    monkeypatch,
):
    v1, v2, v3, v4, v5 = aligned_workload(settings, store, workload="shop")
    body = app_client.get("/ui/dashboard?workload=shop").text
    rows = re.findall(
        r"<tr class=\"(flagged)?\">(.*?)</tr>", body[body.index('<table id="alignment">') :], re.S
    )
    shown = {text_of(row).split()[0]: (flag, text_of(row)) for flag, row in rows}
    assert set(shown) == {"#1", "#2", "#3", "#4", "#5"}
    flag, row = shown["#3"]
    assert flag == "flagged" and "offline gain not seen live" in row
    assert "#3 prompt_rules" in row and "plain +20.0 [" in row and "40.0% [" in row
    assert [k for k, (flag, _) in shown.items() if flag] == ["#3"]
    assert "seen live" in shown["#2"][1] and "too few live tasks" in shown["#4"][1]
    assert 'id="n-flagged"' not in body  # no cycle yet: the cards are not drawn, the table is

    # flywheel report (a workload with a cycle): the same rows as text
    from flywheel.cycle.runner import _finish, _start

    _finish(
        store,
        _start(store, "shop", policy(tmp_path), "manual")["id"],
        "succeeded",
        {"outcome": "no_candidate"},
    )
    monkeypatch.setenv("COLUMNS", "1200")
    text = cli("report", "--workload", "shop", "--out", str(tmp_path / "r"), "--no-png").stdout
    flagged = [line for line in text.splitlines() if "offline gain not seen live" in line]
    assert len(flagged) == 1 and "#3 prompt_rules" in flagged[0]
    body = app_client.get("/ui/dashboard?workload=shop").text
    assert re.search(r'id="n-flagged">\s*1 version<', body)

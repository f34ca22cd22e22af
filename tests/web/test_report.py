"""``flywheel report``: the dashboard as a static file with PNG charts."""

import json

import pytest
from tests.cli.test_cli import cli  # noqa: F401  (fixture)
from tests.cycle.test_cycle import Student, policy, serve

import flywheel
from flywheel.cycle import list_cycles, run_cycle
from flywheel.workloads.bfcl import load_bfcl


@pytest.mark.slow
def test_report_writes_the_dashboard_and_png_charts(cli, settings, store, tmp_path):  # noqa: F811
    assert "has no cycle yet" in str(cli("report", "--workload", "bfcl", ok=False).exception)
    items = load_bfcl(["simple_python"], limit=60, seed=2)
    student = Student({item.question: item.reference_calls() for item in items})
    fw = flywheel.init("bfcl", settings=settings)
    serve(fw, items, student, 100, seed=0)
    fw.close()
    run_cycle(
        store, "bfcl", policy(tmp_path, watch_seconds=0, watch_min_tasks=0), model_for=lambda c: student
    )
    out = json.loads(cli("report", "--workload", "bfcl", "--out", str(tmp_path / "r"), "--json").stdout)
    html = (tmp_path / "r" / "index.html").read_text()
    [cycle] = list_cycles(store, "bfcl")
    assert out["report"] == str(tmp_path / "r" / "index.html")
    assert cycle["result"]["metrics"]["bottleneck"] in html and "vegaEmbed" in html
    for chart in ("accuracy", "gain", "stages", "signal_density", "cost", "satisfaction", "backlog"):
        assert (tmp_path / "r" / f"{chart}.png").read_bytes()[:4] == b"\x89PNG"
    data = json.loads((tmp_path / "r" / "data.json").read_text())
    assert [c["cycle"] for c in data["cycles"]] == [1]

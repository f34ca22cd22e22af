"""``flywheel demo``, the README's main command: the whole loop with the real
local student on a small budget."""

import json

import pytest
from tests.cli.test_cli import cli  # noqa: F401  (fixture)

pytestmark = pytest.mark.model


def test_demo_turns_the_whole_loop_and_reports_each_cycle(cli, store, settings, backend):  # noqa: F811
    from flywheel.cycle import list_cycles

    if backend != "sqlite":
        pytest.skip("the demo runs on the embedded default, SQLite; the cycle's tests cover PostgreSQL")

    out = json.loads(
        cli(
            "demo",
            "--cycles",
            "1",
            "--tasks",
            "80",
            "--categories",
            "simple_python",
            "--seed",
            "3",
            "--strategies",
            "few_shot,prompt_rules",  # LoRA, the default with the train extra, is tested in tests/improve
            "--json",
        ).stdout
    )
    assert out["simulated"] is True and out["categories"] == ["simple_python"]
    [cycle] = out["cycles"]
    [record] = list_cycles(store, "bfcl-demo")
    assert record["status"] == "succeeded" and cycle["outcome"] == record["result"]["outcome"]
    assert cycle["served_version"] == record["result"]["metrics"]["served_version"]
    assert cycle["signal_density"] > 0 and cycle["examples"] > 0
    assert set(cycle["stage_seconds"]) >= {"curate", "improve", "evaluate"}
    if cycle["accuracy"] is not None:  # enough held-out items to measure: accuracy with a CI
        assert 0 <= cycle["ci_low"] <= cycle["accuracy"] <= cycle["ci_high"] <= 1
    assert out["report"] and (settings.home / "report" / "index.html").exists()
    assert (settings.home / "report" / "accuracy.png").read_bytes()[:4] == b"\x89PNG"


def test_demo_rejects_unknown_categories(cli):  # noqa: F811
    bad = cli("demo", "--categories", "simple_python,nonsense", ok=False)
    assert bad.exit_code == 2 and "unknown BFCL categories ['nonsense']" in bad.output


def test_demo_rejects_unknown_strategies(cli):  # noqa: F811
    bad = cli("demo", "--strategies", "few_shot,lora+telepathy", ok=False)
    assert bad.exit_code == 2 and "unknown strategy" in bad.output and "(telepathy)" in bad.output


def test_the_demo_trains_lora_by_default_with_the_train_extra():
    pytest.importorskip("peft", reason="needs the train extra")
    from flywheel.cli.demo import default_strategies

    assert "lora" in default_strategies().split(",")

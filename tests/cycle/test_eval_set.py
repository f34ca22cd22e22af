"""The standing evaluation set: it grows with each curated version, never trains,
holds stale labels out until re-validated, and the gate judges on all of it,
paying only for new items and new versions."""

from datetime import timedelta

from tests.cycle.test_cycle import policy, serve

import flywheel
from flywheel.curate import DEFAULT_RULES, parse_rules
from flywheel.curate import curate as run_curate
from flywheel.curate.eval_set import grow_eval_set, validate_item
from flywheel.cycle import run_cycle
from flywheel.cycle.runner import ensure_baseline
from flywheel.evaluate.standing import standing_items
from flywheel.records import utcnow
from flywheel.store import tables as t

RULES = parse_rules(DEFAULT_RULES.replace("eval: 0.2", "eval: 0.3"), name="test rules")


def _question_splits(store, dataset_id):
    from flywheel.curate.pipeline import _example_from_row, _question_hash

    out = {}
    for row in store.dataset_examples(dataset_id):
        out.setdefault(row["split"], set()).add(str(_question_hash(_example_from_row(row))))
    return out


def test_the_set_grows_with_each_version_and_never_trains(settings, store, items, student):
    fw = flywheel.init("bfcl", settings=settings)
    serve(fw, items, student, 80, seed=0)
    first = run_curate(store, "bfcl", RULES)
    grown = grow_eval_set(store, "bfcl", first.dataset_id)
    labelled = [r for r in store.dataset_examples(first.dataset_id, "eval") if r["kind"] == "sft"]
    assert grown["version"] == 1 and grown["added"] == grown["items"] > 0
    assert grown["items"] <= len(labelled)  # one item per question
    assert set(grown["provenance"]) <= {"correction", "simulated", "confirmed", "review", "outcome"}

    serve(fw, items, student, 120, seed=1)
    fw.close()
    second = run_curate(store, "bfcl", RULES)
    again = grow_eval_set(store, "bfcl", second.dataset_id)
    assert again["version"] == 2 and again["items"] >= grown["items"]
    held = {row["question"] for row in store.eval_set_items("bfcl")}
    splits = _question_splits(store, second.dataset_id)
    assert not held & (splits.get("train", set()) | splits.get("few_shot", set()))
    assert [v["number"] for v in store.list_eval_sets("bfcl")] == [1, 2]


def test_old_labels_wait_for_revalidation(settings, store, items, student):
    fw = flywheel.init("bfcl", settings=settings)
    serve(fw, items, student, 80, seed=0)
    fw.close()
    dataset = run_curate(store, "bfcl", RULES).dataset_id
    grow_eval_set(store, "bfcl", dataset)
    fresh = standing_items(store, "bfcl")
    later = utcnow() + timedelta(days=40)
    grown = grow_eval_set(store, "bfcl", dataset, max_age_days=30, now=later)
    assert grown["stale"] == grown["items"] == len(fresh)
    assert standing_items(store, "bfcl") == []
    item = store.eval_set_items("bfcl")[0]
    assert item["stale"] == "label older than 30 days"
    validate_item(store, item["id"], now=later)
    assert [i.id for i in standing_items(store, "bfcl")] == [item["id"]]


def test_a_changed_tool_schema_makes_its_items_stale(settings, store, items, student):
    fw = flywheel.init("bfcl", settings=settings)
    serve(fw, items, student, 80, seed=0)
    fw.close()
    dataset = run_curate(store, "bfcl", RULES).dataset_id
    grow_eval_set(store, "bfcl", dataset)
    item = store.eval_set_items("bfcl")[0]
    with store.engine.begin() as conn:  # as if the item had been labelled under another schema
        conn.execute(
            t.eval_set_items.update()
            .where(t.eval_set_items.c.id == item["id"])
            .values(tools_fingerprint="0" * 32)
        )
    grow_eval_set(store, "bfcl", dataset)
    stale = {i["id"]: i["stale"] for i in store.eval_set_items("bfcl")}
    assert "schema" in stale[item["id"]] and "changed" in stale[item["id"]]
    assert item["id"] not in {i.id for i in standing_items(store, "bfcl")}


def test_cycles_judge_on_the_whole_set_and_answer_only_what_is_new(
    settings,
    store,
    items,
    student,
    tmp_path,
):
    fw = flywheel.init("bfcl", settings=settings)
    chosen = policy(tmp_path, eval_set="standing")
    ensure_baseline(store, "bfcl", chosen.base_config, actor="test")
    serve(fw, items, student, 120, seed=0)
    runs = []
    for n in range(2):
        runs.append(
            run_cycle(
                store,
                "bfcl",
                chosen,
                model_for=lambda config: student,
                traffic=lambda k, n=n: serve(fw, items, student, k * 2, seed=100 + n),
            )
        )
        serve(fw, items, student, 80, seed=200 + n)
    fw.close()
    from flywheel.cycle import get_cycle

    outputs = [{s["stage"]: s["outputs"] for s in get_cycle(store, r.id)["stages"]} for r in runs]
    sets = [o["curate"]["eval_set"] for o in outputs]
    assert sets[1]["version"] == sets[0]["version"] + 1 and sets[1]["items"] >= sets[0]["items"]
    judged = [o["evaluate"]["items"] for o in outputs]
    assert judged == [sets[0]["items"], sets[1]["items"]]
    # the version both cycles compared against answered each item once
    stable = outputs[1]["baseline"]["stable_version"]
    with store.engine.connect() as conn:
        answered = conn.execute(
            t.eval_results.select().where(t.eval_results.c.version_id == stable)
        ).fetchall()
    assert len(answered) == len({r.item_id for r in answered}) <= sets[1]["items"]


def test_the_set_on_the_command_line(settings, store, items, student, monkeypatch):
    import json

    from typer.testing import CliRunner

    from flywheel.cli import app

    fw = flywheel.init("bfcl", settings=settings)
    serve(fw, items, student, 60, seed=0)
    fw.close()
    grow_eval_set(store, "bfcl", run_curate(store, "bfcl", RULES).dataset_id)
    monkeypatch.setenv("FLYWHEEL_DATABASE_URL", settings.database_url)
    runner = CliRunner()
    shown = json.loads(runner.invoke(app, ["evalset", "show", "bfcl", "--json"]).stdout)
    assert [v["number"] for v in shown["versions"]] == [1] and shown["items"]
    item = shown["items"][0]["id"]
    result = runner.invoke(app, ["evalset", "validate", item])
    assert result.exit_code == 0 and "fresh again" in result.stdout
    missing = runner.invoke(app, ["evalset", "show", "nope"])
    assert missing.exit_code != 0


def test_a_sequential_gate_stops_early_and_a_small_set_asks_for_labels(
    settings,
    store,
    items,
    student,
    tmp_path,
):
    from flywheel.cycle import get_cycle
    from flywheel.cycle.runner import GateSettings

    fw = flywheel.init("bfcl", settings=settings)
    ensure_baseline(store, "bfcl", policy(tmp_path).base_config, actor="test")
    serve(fw, items, student, 160, seed=0)
    fw.close()
    quick = GateSettings(max_latency_ratio=100, max_cost_ratio=100, test="sequential", alpha=0.05)
    run = run_cycle(
        store,
        "bfcl",
        policy(tmp_path, gate=quick, eval_batch=5, watch_seconds=0),
        model_for=lambda c: student,
    )
    evaluate = {s["stage"]: s["outputs"] for s in get_cycle(store, run.id)["stages"]}["evaluate"]
    (evaluation,) = evaluate["evaluations"]
    assert evaluation["promote"] and evaluation["stopped_early"] is not None
    assert evaluation["stopped_early"] < evaluate["items"]  # a clear win needs fewer items
    with store.engine.connect() as conn:
        answered = conn.execute(
            t.eval_results.select().where(t.eval_results.c.version_id == evaluation["version"])
        ).fetchall()
    assert len(answered) == evaluation["stopped_early"]
    # the items the two versions answered differently are worth a reviewer's look: boosted
    boosted = [i for i in store.review_queue("bfcl", limit=1000) if "disagree" in i["reason"]]
    assert evaluate["review_boosted"] == len(boosted) > 0
    assert all(i["priority"] >= 1.0 for i in boosted)  # the boost's weight, on top of their own value


def test_a_set_too_small_for_the_gain_worth_shipping_asks_for_labels(
    settings,
    store,
    items,
    student,
    tmp_path,
):
    from flywheel.cycle import get_cycle
    from flywheel.cycle.runner import GateSettings

    fw = flywheel.init("bfcl", settings=settings)
    ensure_baseline(store, "bfcl", policy(tmp_path).base_config, actor="test")
    serve(fw, items, student, 40, seed=3)
    fw.close()
    strict = GateSettings(max_latency_ratio=100, max_cost_ratio=100, alpha=0.001, min_gain=0.05)
    chosen = policy(tmp_path, gate=strict, watch_seconds=0, min_eval_items=4)
    run = run_cycle(store, "bfcl", chosen, model_for=lambda c: student)
    evaluate = {s["stage"]: s["outputs"] for s in get_cycle(store, run.id)["stages"]}["evaluate"]
    (evaluation,) = evaluate["evaluations"]
    assert evaluate["items"] < 20 and evaluate["chosen"] is None, evaluate
    power = evaluation["power"]
    assert not power["enough"] and power["needed_items"] > evaluate["items"]
    assert evaluate["labels_needed"] == power["needed_items"] - evaluate["items"]
    assert f"{evaluate['labels_needed']} more labelled items" in evaluate["reason"]

"""Why the gate decided, and whether offline gains show live: the verdicts and
the alignment the dashboard, ``flywheel report`` and the demo show, computed
from evaluations recorded through the real compare / gate / record functions
and from live traffic logged through the SDK."""

from __future__ import annotations

import pytest

import flywheel
from flywheel.cycle.metrics import candidate_verdicts, live_difference, metric_alignment
from flywheel.deploy import create_version
from flywheel.evaluate.offline import GatePolicy, ItemResult, compare, gate, record_evaluation
from flywheel.store.history import evaluation_results
from flywheel.web.charts import gain_rows


def results(right: list[bool]) -> dict[str, ItemResult]:
    return {f"i{k}": ItemResult(f"i{k}", "calc", ok, 1.0, 10, 2, 0.0) for k, ok in enumerate(right)}


def measure(
    store, workload, baseline, candidate, *, base_right, cand_right, n=40, origins=None, ratings=None
):
    """Compare, gate and record as the cycle's evaluate stage does; returns the
    stage's entry for the candidate (which carries no power) and the decision."""
    a = results([k < base_right for k in range(n)])
    b = results([k < cand_right for k in range(n)])
    comparison = compare(a, b, origin_of=origins, baseline_ratings=ratings)
    decision = gate(comparison, GatePolicy())
    result = {"baseline_version": baseline, "candidate_version": candidate, **comparison, "gate": decision}
    evaluation = record_evaluation(store, workload, "d1", baseline, candidate, result)
    entry = {
        "evaluation": evaluation,
        "strategy": "few_shot",
        "version": candidate,
        **{
            k: comparison[k]
            for k in ("baseline", "candidate", "difference", "ci95", "mcnemar_p", "reweighted")
        },
        "gain": decision["gain"],
        "promote": decision["promote"],
        "checks": decision["checks"],
    }
    return entry, decision


def test_the_verdict_names_the_reweighted_estimate_that_refused_a_candidate(store):
    # the case: the plain CI excludes zero, the estimate the gate judged does not
    origins = {f"i{k}": "baseline_corrected" if k % 2 else "other_traffic" for k in range(40)}
    entry, decision = measure(
        store,
        "bfcl",
        "v-base",
        "v-cand",
        base_right=0,
        cand_right=8,
        origins=origins,
        ratings={"up": 30, "down": 10},
    )
    assert entry["ci95"][0] > 0 and not decision["promote"]
    stored = evaluation_results(store, [entry["evaluation"]])
    [verdict] = candidate_verdicts(
        {"items": 40, "chosen": None, "evaluations": [entry]}, stored, outcome="gate_failed"
    )
    reweighted = entry["reweighted"]
    assert verdict["estimate"] == "reweighted" and verdict["status"] == "refused"
    assert verdict["gain"] == reweighted["difference"] < 0 and verdict["ci95"] == reweighted["ci95"]
    assert verdict["plain_gain"] == pytest.approx(0.2) and verdict["plain_ci95"] == entry["ci95"]
    assert verdict["refused_by"] == decision["checks"][0]["check"]
    assert verdict["refused_by"].startswith("gain -0.250 (the baseline's own items reweighted")
    # the power, recorded with the evaluation but not in the stage's entry, comes from the store
    power = decision["power"]
    assert verdict["power"] == power and f"needs {power['needed_items']} items" in verdict["power_text"]
    assert f"{power['mde']:.1%} at n={power['n']} effective of 40" in verdict["power_text"]
    assert verdict["sequential_text"].startswith("anytime-valid test: win at item")

    # the gain chart plots the judged estimate, labelled, and the plain one lighter beside it
    judged, plain = gain_rows([{"cycle": 1, **verdict}])
    assert (judged["estimate"], judged["gain"], [judged["low"], judged["high"]]) == (
        "judged: reweighted",
        reweighted["difference"],
        reweighted["ci95"],
    )
    assert judged["label"] == ["reweighted", "(judged)"] and judged["band"] == plain["band"] == "1 · few_shot"
    assert judged["refused_by"] == verdict["refused_by"] and judged["status"] == "refused"
    assert (plain["estimate"], plain["gain"], plain["label"]) == ("plain (not judged)", 0.2, ["plain"])


def test_a_plain_verdict_has_no_second_estimate_and_a_passing_one_no_refusal(store):
    entry, decision = measure(store, "bfcl", "v-base", "v-cand", base_right=5, cand_right=25)
    assert decision["promote"] and entry["reweighted"] is None
    [verdict] = candidate_verdicts(
        {"items": 40, "chosen": "v-cand", "evaluations": [entry]}, {}, outcome="promoted"
    )
    assert (verdict["estimate"], verdict["status"], verdict["refused_by"]) == ("plain", "promoted", None)
    assert verdict["ci95"] == entry["ci95"] and verdict["power"] is None  # nothing stored given
    assert [r["estimate"] for r in gain_rows([{"cycle": 1, **verdict}])] == ["judged: plain"]


def test_a_live_difference_is_better_only_when_its_ci_is_above_zero():
    better = live_difference(20, 50, 40, 50, offline_gain=0.2, min_n=30)
    assert better["better"] and better["enough"] and better["ci95"][0] > 0
    same = live_difference(20, 50, 21, 50, offline_gain=0.3, min_n=30)
    assert not same["better"] and same["enough"] and same["ci95"][0] < 0 < same["ci95"][1]
    # too few to see a 5-point gain: not enough, and about how many would be
    small = live_difference(20, 50, 21, 50, offline_gain=0.05, min_n=30)
    assert not small["enough"] and small["needed"] > 500


def log_traffic(fw, version, tasks, successes):
    """Live tasks of ``version``: the first ``successes`` succeed and are rated up,
    the rest fail and are rated down."""
    for k in range(tasks):
        with fw.task(session_id=f"{version}-{k}", input=f"q{k}", agent_version=version) as task:
            task.finish(output="a", success=k < successes)
        fw.feedback(task.id, thumbs=1 if k < successes else -1)


def aligned_workload(settings, store, workload="shop"):
    """Versions #1 -> #2 -> #3 -> #4, each measured offline +20 points over its
    parent; live, #2 beats #1, #3 falls back to #1's rates, #4 has served 5 tasks;
    #5, refused by the gate, never served."""
    v1 = create_version(store, workload, {"model": "m1"})
    v2 = create_version(store, workload, {"model": "m2"}, parent_id=v1.id, strategy="few_shot")
    v3 = create_version(store, workload, {"model": "m3"}, parent_id=v2.id, strategy="prompt_rules")
    v4 = create_version(store, workload, {"model": "m4"}, parent_id=v3.id, strategy="few_shot")
    v5 = create_version(store, workload, {"model": "m5"}, parent_id=v2.id, strategy="knowledge")
    for parent, child in ((v1, v2), (v2, v3), (v3, v4)):
        measure(store, workload, parent.id, child.id, base_right=10, cand_right=18)
    measure(store, workload, v2.id, v5.id, base_right=18, cand_right=16)
    fw = flywheel.init(workload, settings=settings)
    log_traffic(fw, v1.id, 60, 24)
    log_traffic(fw, v2.id, 60, 48)
    log_traffic(fw, v3.id, 60, 24)
    log_traffic(fw, v4.id, 5, 5)
    fw.flush(30)
    fw.close()
    return v1, v2, v3, v4, v5


def test_a_version_whose_offline_gain_does_not_show_live_is_flagged(settings, store):
    v1, v2, v3, v4, v5 = aligned_workload(settings, store)
    rows = {r["version"]: r for r in metric_alignment(store, "shop")}
    assert set(rows) == {v1.id, v2.id, v3.id, v4.id, v5.id}
    first, seen, flagged, few, refused = (rows[v.id] for v in (v1, v2, v3, v4, v5))
    assert first["verdict"] == "no parent measured" and first["offline"]["accuracy"] == 0.25
    assert first["live"]["completion"] == 0.4 and first["live"]["satisfaction"] == 0.4

    assert seen["verdict"] == "seen live" and not seen["flagged"]
    assert seen["offline_gain"]["gain"] == pytest.approx(0.2) and seen["offline_gain"]["estimate"] == "plain"
    assert seen["live_vs_parent"]["completion"]["ci95"][0] > 0

    assert flagged["flagged"] and flagged["verdict"] == "offline gain not seen live"
    assert flagged["live"]["tasks"] == 60 and flagged["live"]["rated"] == 60
    for name in ("completion", "satisfaction"):
        test = flagged["live_vs_parent"][name]
        assert test["difference"] == pytest.approx(-0.4) and test["worse"] and test["enough"]
    assert flagged["detail"].startswith("offline +20.0%; live vs parent: completion -40.0% [")

    assert few["verdict"] == "too few live tasks" and not few["flagged"]
    assert "per version would show a +20.0% gain" in few["detail"]
    assert refused["verdict"] == "no offline gain" and refused["live"]["tasks"] == 0
    assert refused["offline_gain"]["passed"] is False and refused["offline_gain"]["refused_by"]

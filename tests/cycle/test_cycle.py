"""The flywheel cycle end to end on real BFCL items: the real simulator, agent,
curation, few-shot strategy, evaluation, canary and watch, with a scripted
model at the edge (right when it is shown examples, mostly wrong without)."""

import hashlib
import subprocess
import sys
import time

import pytest

import flywheel
from flywheel.agents.simulate import SimulatedUsers, simulate
from flywheel.cycle import CyclePolicy, StoreLock, get_cycle, list_cycles, lock_holder, run_cycle
from flywheel.cycle.runner import GateSettings
from flywheel.deploy import deployment
from flywheel.errors import Conflict
from flywheel.models.base import ChatResult, last_user_text
from flywheel.workloads.bfcl import load_bfcl


class Student:
    """Right on every request when the prompt carries examples; otherwise right
    on about a quarter of them (fixed per question)."""

    name = "scripted-student"

    def __init__(self, answers, fail_after=None):
        self.answers = answers
        self.calls = 0
        self.fail_after = fail_after

    def complete(self, request):
        self.calls += 1
        if self.fail_after is not None and self.calls > self.fail_after:
            raise ConnectionError("the model endpoint went away")
        question = last_user_text(request.messages)
        lucky = hashlib.sha256(question.encode()).digest()[0] < 64
        right = [dict(c) for c in self.answers[question]]
        calls = right if (request.few_shot or lucky) else [{"name": "wrong_tool", "arguments": {}}]
        return ChatResult(calls, "", self.name, 80, 12, 0.01, 0.9, None)


@pytest.fixture
def items():
    return load_bfcl(["simple_python"], limit=80, seed=1)


@pytest.fixture
def student(items):
    return Student({item.question: item.reference_calls() for item in items})


def policy(tmp_path, **changes):
    rules = tmp_path / "rules.yaml"
    from flywheel.curate import DEFAULT_RULES

    rules.write_text(
        DEFAULT_RULES.replace("few_shot: 0.1", "few_shot: 0.2").replace("eval: 0.2", "eval: 0.3")
    )
    base = {
        "rules": str(rules),
        "base_config": {"model": "scripted", "max_tokens": 64},
        "min_eval_items": 8,
        "canary_share": 0.5,
        "watch_min_tasks": 10,
        "watch_seconds": 120,
        "gate": GateSettings(max_latency_ratio=100, max_cost_ratio=100),
    }
    return CyclePolicy(**{**base, **changes})


def serve(fw, items, student, tasks, seed):
    simulate(
        fw,
        items,
        lambda config: student,
        tasks=tasks,
        sessions=tasks,
        seed=seed,
        users=SimulatedUsers(correction_rate=0.6, noise=0.0),
    )
    fw.flush(30)


def test_a_cycle_curates_improves_evaluates_canaries_and_promotes(settings, store, items, student, tmp_path):
    fw = flywheel.init("bfcl", settings=settings)
    chosen = policy(tmp_path)
    from flywheel.cycle.runner import ensure_baseline

    base, created = ensure_baseline(store, "bfcl", chosen.base_config, actor="test")
    assert created
    serve(fw, items, student, 160, seed=0)
    seen = []
    run = run_cycle(
        store,
        "bfcl",
        chosen,
        model_for=lambda config: student,
        traffic=lambda n: serve(fw, items, student, n * 2, seed=len(seen) + 100),
        progress=lambda stage, text: seen.append((stage, text)),
    )
    fw.close()
    assert run.status == "succeeded" and run.outcome == "promoted", run.result
    cycle = get_cycle(store, run.id)
    stages = [s["stage"] for s in cycle["stages"]]
    assert stages == [
        "baseline",
        "cutoff",
        "curate",
        "review",
        "improve",
        "evaluate",
        "canary",
        "watch",
        "decide",
    ]
    assert all(s["status"] == "done" and s["finished_at"] >= s["started_at"] for s in cycle["stages"])
    by = {s["stage"]: s["outputs"] for s in cycle["stages"]}
    chosen_version = by["evaluate"]["chosen"]
    assert deployment(store, "bfcl")["stable_version"] == chosen_version != base
    assert by["cutoff"]["new_tasks"] == 160 and by["curate"]["examples"] > 0
    evaluation = by["evaluate"]["evaluations"][0]
    assert evaluation["candidate"]["accuracy"] == 1.0 > evaluation["baseline"]["accuracy"]
    assert evaluation["ci95"][0] > 0 and by["watch"]["canary_tasks"] >= 10
    metrics = cycle["result"]["metrics"]
    assert metrics["signal_density"] == by["curate"]["signal_density"] > 0
    assert metrics["improvement"]["promoted"] is True
    assert (
        metrics["bottleneck"] in stages
        and metrics["cycle_seconds"] >= sum(v for k, v in metrics["stage_seconds"].items()) * 0.99
    )
    assert metrics["live"]["tasks"] == 160 and metrics["live"]["satisfaction"] is not None
    actions = [e.action for e in store.audit_events("deployment")]
    assert "deploy.canary" in actions and "deploy.promote" in actions
    assert [c["number"] for c in list_cycles(store, "bfcl")] == [1]


def test_a_failed_stage_resumes_from_its_checkpoint(settings, store, items, student, tmp_path):
    fw = flywheel.init("bfcl", settings=settings)
    serve(fw, items, student, 120, seed=3)
    fw.close()
    chosen = policy(tmp_path, watch_seconds=0, watch_min_tasks=0)
    flaky = Student(student.answers, fail_after=5)
    with pytest.raises(ConnectionError):
        run_cycle(store, "bfcl", chosen, model_for=lambda config: flaky)
    first = list_cycles(store, "bfcl")
    assert [c["status"] for c in first] == ["failed"]
    status = {s["stage"]: s["status"] for s in get_cycle(store, first[0]["id"])["stages"]}
    assert status["curate"] == status["improve"] == "done" and status["evaluate"] == "failed"
    datasets = len(store.list_datasets("bfcl"))
    served = student.calls
    run = run_cycle(store, "bfcl", chosen, model_for=lambda config: student)
    assert run.id == first[0]["id"] and run.status == "succeeded"  # the same cycle, resumed
    assert len(store.list_datasets("bfcl")) == datasets  # curation was not run again
    items_evaluated = get_cycle(store, run.id)["stages"][5]["outputs"]["items"]
    assert student.calls - served == 2 * items_evaluated - 5  # the 5 answers before the failure were kept


def test_an_abandoned_cycle_is_not_resumed(settings, store, items, student, tmp_path):
    from flywheel.cycle.runner import abandon_cycle

    fw = flywheel.init("bfcl", settings=settings)
    serve(fw, items, student, 60, seed=6)
    fw.close()
    chosen = policy(tmp_path, watch_seconds=0, watch_min_tasks=0)
    flaky = Student(student.answers, fail_after=0)
    with pytest.raises(ConnectionError):
        run_cycle(store, "bfcl", chosen, model_for=lambda config: flaky)
    abandoned = abandon_cycle(store, "bfcl#1")
    assert abandoned["status"] == "abandoned"
    with pytest.raises(Conflict, match="abandoned, not unfinished"):
        abandon_cycle(store, "bfcl#1")
    run = run_cycle(store, "bfcl", chosen, model_for=lambda config: student)
    assert run.number == 2 and run.status == "succeeded"


def test_a_cycle_builds_no_candidate_while_the_eval_split_is_too_small(
    settings, store, items, student, tmp_path
):
    from flywheel.deploy import list_versions

    fw = flywheel.init("bfcl", settings=settings)
    serve(fw, items, student, 40, seed=8)
    fw.close()
    chosen = policy(tmp_path, min_eval_items=500, watch_seconds=0, watch_min_tasks=0)
    run = run_cycle(store, "bfcl", chosen, model_for=lambda config: student)
    assert run.status == "succeeded" and run.outcome == "no_candidate"
    by = {s["stage"]: s["outputs"] for s in get_cycle(store, run.id)["stages"]}
    held_out = by["curate"]["eval_set"]["items"]  # the standing set: the eval split's labelled items
    assert 0 < held_out <= by["curate"]["splits"].get("eval", 0) < 500
    expected = f"{held_out} held-out items (the policy needs 500)"
    assert by["improve"]["candidates"] == [] and by["improve"]["skipped"] == expected
    assert by["evaluate"]["reason"] == expected
    assert len(list_versions(store, "bfcl")) == 1  # the baseline: nothing was built

    # judged on the dataset's split alone (no standing set), and no eval split at all
    # (rules that hold nothing out): the same, not a failed cycle
    from flywheel.curate import DEFAULT_RULES

    rules = tmp_path / "no-eval.yaml"
    rules.write_text(DEFAULT_RULES.replace("eval: 0.2", "eval: 0.0"))
    fw = flywheel.init("bfcl", settings=settings)
    serve(fw, items, student, 10, seed=9)
    fw.close()
    run = run_cycle(
        store,
        "bfcl",
        policy(tmp_path, rules=str(rules), watch_seconds=0, eval_set="dataset"),
        model_for=lambda c: student,
    )
    assert run.status == "succeeded" and run.outcome == "no_candidate"
    by = {s["stage"]: s["outputs"] for s in get_cycle(store, run.id)["stages"]}
    assert by["improve"]["skipped"] == by["evaluate"]["reason"] == "0 held-out items (the policy needs 8)"


def test_a_cycle_waits_for_reviews_when_its_policy_says_so(settings, store, items, student, tmp_path):
    from flywheel.ingest import Ingestor
    from flywheel.review import next_item, review

    fw = flywheel.init("bfcl", settings=settings)
    serve(fw, items, student, 60, seed=4)
    fw.close()
    chosen = policy(tmp_path, review="wait", watch_seconds=0, watch_min_tasks=0)
    run = run_cycle(store, "bfcl", chosen, model_for=lambda config: student)
    pending = len(store.review_queue("bfcl", limit=1000))
    assert run.status == "waiting" and pending and f"{pending} review items pending" in run.result["reason"]
    ingestor = Ingestor(store, settings)
    while (item := next_item(store, "bfcl")) is not None:  # a reviewer works through the queue
        review(store, ingestor, item["task_id"], "approve", reviewer="ana")
    ingestor.close()
    again = run_cycle(store, "bfcl", chosen, model_for=lambda config: student)
    assert again.id == run.id and again.status == "succeeded"
    assert len([e for e in store.audit_events("task", limit=1000) if e.action == "review.approve"]) == pending


def test_a_cycle_asks_for_its_review_budget_and_waits_only_for_that_batch(
    settings, store, items, student, tmp_path
):
    from flywheel.ingest import Ingestor
    from flywheel.review import review

    fw = flywheel.init("bfcl", settings=settings)
    serve(fw, items, student, 60, seed=4)
    fw.close()
    chosen = policy(tmp_path, review="wait", review_budget=3, watch_seconds=0, watch_min_tasks=0)
    run = run_cycle(store, "bfcl", chosen, model_for=lambda config: student)
    pending = store.review_queue("bfcl", limit=1000)
    batch = store.review_queue("bfcl", limit=1000, cycle_id=run.id)
    assert run.status == "waiting" and len(pending) > 3 and len(batch) == 3
    assert batch == pending[:3]  # the best expected value first
    more = len(pending) - 3
    assert run.result["reason"] == (
        f"3 review items pending for bfcl (this cycle's budget: 3; {more} more ranked, not queued)"
    )
    assert len({i["priority"] for i in pending}) > 1 and all(i["factors"] for i in pending)
    ingestor = Ingestor(store, settings)
    for item in batch:
        review(store, ingestor, item["task_id"], "approve", reviewer="ana")
    ingestor.close()
    again = run_cycle(store, "bfcl", chosen, model_for=lambda config: student)
    assert again.id == run.id and again.status == "succeeded"
    stage = next(s for s in get_cycle(store, run.id)["stages"] if s["stage"] == "review")["outputs"]
    assert (stage["budget"], stage["selected"], stage["pending"]) == (3, 3, 0)
    assert stage["backlog"] == len(pending) - 3 == len(store.review_queue("bfcl", limit=1000))


def test_one_cycle_per_workload_at_a_time(store):
    held = StoreLock(store, "cycle:bfcl", ttl=30).acquire()
    try:
        with pytest.raises(Conflict, match="cycle:bfcl is held by"):
            run_cycle(store, "bfcl", CyclePolicy())
        other = StoreLock(store, "cycle:other", ttl=30)
        assert other.try_acquire()  # other workloads are free
        other.release()
    finally:
        held.release()
    assert lock_holder(store, "cycle:bfcl") is None


def test_a_crashed_holder_releases_the_lock_when_its_lease_runs_out(settings, store):
    code = (
        "import os, sys, time\n"
        "from flywheel.config import Settings\n"
        "from flywheel.store import Store\n"
        "from flywheel.cycle import StoreLock\n"
        f"store = Store.open(Settings(database_url={settings.database_url!r}))\n"
        "StoreLock(store, 'cycle:bfcl', ttl=2).acquire()\n"
        "print('held', flush=True)\n"
        "os.kill(os.getpid(), 9)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert out.stdout.strip() == "held" and out.returncode == -9
    assert not StoreLock(store, "cycle:bfcl").try_acquire()  # still leased
    time.sleep(2.5)
    lock = StoreLock(store, "cycle:bfcl")
    assert lock.try_acquire() and lock_holder(store, "cycle:bfcl")["owner"] == lock.owner
    lock.release()


def test_two_takers_of_an_expired_lease_cannot_both_win(store):
    dead = StoreLock(store, "cycle:bfcl", ttl=0.5)
    assert dead.try_acquire()
    dead._stop.set()  # it stops renewing, as if its process had died
    time.sleep(0.8)
    a, b = StoreLock(store, "cycle:bfcl"), StoreLock(store, "cycle:bfcl")
    assert [a.try_acquire(), b.try_acquire()].count(True) == 1
    for lock in (a, b):
        lock.release()


def test_policy_files_are_validated(tmp_path):
    bad = tmp_path / "policy.yaml"
    bad.write_text("canary_share: 2\nstrategies: [magic]\n")
    from flywheel.errors import InvalidInput

    with pytest.raises(InvalidInput, match="canary_share"):
        CyclePolicy.load(bad)
    good = tmp_path / "policy.toml"
    good.write_text('review = "wait"\n[gate]\nmax_latency_ratio = 4.0\n')
    assert CyclePolicy.load(good).gate.max_latency_ratio == 4.0


def test_cycle_list_and_show_on_the_command_line(settings, store, items, student, tmp_path, monkeypatch):
    import json

    from typer.testing import CliRunner

    from flywheel.cli import app

    fw = flywheel.init("bfcl", settings=settings)
    serve(fw, items, student, 100, seed=5)
    fw.close()
    run = run_cycle(
        store, "bfcl", policy(tmp_path, watch_seconds=0, watch_min_tasks=0), model_for=lambda c: student
    )
    monkeypatch.setenv("FLYWHEEL_DATABASE_URL", settings.database_url)
    runner = CliRunner()
    listed = json.loads(runner.invoke(app, ["cycle", "list", "--json"]).stdout)
    assert [(c["id"], c["outcome"]) for c in listed] == [(run.id, run.outcome)]
    shown = json.loads(runner.invoke(app, ["cycle", "show", "bfcl#1", "--json"]).stdout)
    assert [s["stage"] for s in shown["stages"]][:3] == ["baseline", "cutoff", "curate"]
    text = runner.invoke(app, ["cycle", "show", "bfcl#1"]).stdout
    assert "evaluate" in text and "done" in text
    missing = runner.invoke(app, ["cycle", "show", "bfcl#9"])
    assert missing.exit_code != 0 and "no cycle 'bfcl#9'" in str(missing.exception)

"""The live canary comparison: false alarms under A/A, detection delay under an injected drop,
and the automatic rollback on the real store."""

import random
from datetime import timedelta

import pytest

from flywheel.deploy import create_version, deployment, promote, set_canary
from flywheel.deploy.live import LivePolicy, Rates, decide, msprt_p, watch
from flywheel.ingest import Ingestor
from flywheel.records import new_id, utcnow


def _run(rng, p_stable, p_canary, policy, looks_every=50, max_per_arm=2000):
    """Simulated traffic, looked at every ``looks_every`` tasks per arm; returns (action, tasks)."""
    stable, canary = Rates(), Rates()
    while canary.tasks < max_per_arm:
        for _ in range(looks_every):
            for rates, p in ((stable, p_stable), (canary, p_canary)):
                rates.tasks += 1
                ok = rng.random() < p
                rates.successes += ok
                rates.negative += (not ok) and rng.random() < 0.3
                rates.tool_errors += rng.random() < 0.05
        decision = decide(stable, canary, policy)
        if decision["action"] == "rollback":
            return "rollback", canary.tasks
        if decision["action"] == "promote" and canary.tasks < max_per_arm:
            return "promote", canary.tasks
    return "budget", canary.tasks


def test_a_null_run_rolls_back_no_more_often_than_alpha():
    rng = random.Random(42)
    policy = LivePolicy(alpha=0.05, budget_tasks=10**9, promote_on_win=False)
    runs = 300
    false_rollbacks = sum(_run(rng, 0.7, 0.7, policy)[0] == "rollback" for _ in range(runs))
    rate = false_rollbacks / runs
    print(f"A/A: {false_rollbacks}/{runs} false rollbacks over 40 looks each (rate {rate:.3f}, alpha 0.05)")
    assert rate <= 0.05


def test_an_injected_drop_is_rolled_back_quickly():
    rng = random.Random(7)
    policy = LivePolicy(alpha=0.05, budget_tasks=10**9)
    delays = []
    for _ in range(50):
        action, tasks = _run(rng, 0.8, 0.65, policy)
        assert action == "rollback"
        delays.append(tasks)
    delays.sort()
    print(
        f"15-point drop detected after a median of {delays[len(delays) // 2]} canary tasks (max {delays[-1]})"
    )
    assert delays[len(delays) // 2] <= 600


def test_msprt_is_calm_on_equal_rates_and_sure_on_different_ones():
    assert msprt_p(70, 100, 70, 100)[0] == 1.0
    p, diff = msprt_p(800, 1000, 600, 1000)
    assert p < 1e-6 and diff == pytest.approx(-0.2)


def _traffic(store, settings, version_id, n, success_rate, rng, negative_rate=0.0):
    events = []
    now = utcnow()
    for _ in range(n):
        task_id = new_id()
        ok = rng.random() < success_rate
        at = (now + timedelta(seconds=1)).isoformat()
        events.append(
            {
                "type": "task_finished",
                "id": task_id,
                "workload": "w",
                "session_id": new_id(),
                "agent_version": version_id,
                "started_at": at,
                "ended_at": at,
                "success": ok,
                "output": "x",
            }
        )
        if not ok and rng.random() < negative_rate:
            events.append({"type": "feedback", "id": new_id(), "task_id": task_id, "thumbs": -1, "at": at})
    Ingestor(store, settings).ingest(events)


def test_watch_rolls_back_a_regressing_canary_and_audits_why(store, settings):
    rng = random.Random(1)
    stable = create_version(store, "w", {"model": "local"})
    canary = create_version(store, "w", {"model": "local", "rules": ["worse"]})
    promote(store, "w", stable.id)
    set_canary(store, "w", canary.id, 0.5)
    assert watch(store, "w")["action"] == "continue"  # no traffic yet
    _traffic(store, settings, stable.id, 400, 0.85, rng, negative_rate=0.5)
    _traffic(store, settings, canary.id, 400, 0.55, rng, negative_rate=0.5)
    decision = watch(store, "w")
    assert decision["action"] == "rollback" and decision["tests"]["success"]["regression"]
    assert deployment(store, "w")["canary_version"] is None
    event = store.audit_events(record_type="deployment")[0]
    assert event.action == "deploy.rollback" and "significant regression" in event.details["reason"]


def test_watch_promotes_a_clear_winner(store, settings):
    rng = random.Random(2)
    stable = create_version(store, "w", {"model": "local"})
    better = create_version(store, "w", {"model": "local", "rules": ["better"]})
    promote(store, "w", stable.id)
    set_canary(store, "w", better.id, 0.5)
    _traffic(store, settings, stable.id, 400, 0.5, rng)
    _traffic(store, settings, better.id, 400, 0.8, rng)
    assert watch(store, "w")["action"] == "promote"
    assert deployment(store, "w")["stable_version"] == better.id

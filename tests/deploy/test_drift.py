"""Degradation detection: CUSUM on live metrics, alerts, and the cycle they trigger."""

import random
import time

from flywheel.cycle.schedule import due
from flywheel.deploy.drift import DriftPolicy, cusum_bernoulli, cusum_normal, detect, open_alerts


def stream(rng, p, n):
    return [rng.random() < p for _ in range(n)]


def test_cusum_stays_quiet_on_stationary_traffic_and_catches_a_jump():
    rng = random.Random(7)
    policy = DriftPolicy()
    quiet = [cusum_bernoulli(stream(rng, 0.2, 2000), 0.2, policy.shift, policy.threshold) for _ in range(20)]
    assert quiet.count(None) >= 18  # at most a rare false alarm in 40,000 stationary tasks
    delays = [
        cusum_bernoulli(stream(rng, 0.45, 1000), 0.2, policy.shift, policy.threshold) for _ in range(20)
    ]
    assert all(d is not None and d < 250 for d in delays)  # a 25-point jump is seen within ~100 tasks
    assert sorted(delays)[10] < 120
    slow = [rng.gauss(0, 1) for _ in range(500)] + [rng.gauss(2, 1) for _ in range(200)]
    at = cusum_normal(slow, 0.0, 1.0, policy.latency_shift, policy.latency_threshold)
    assert at is not None and 500 <= at < 530


def log(fw, n, fail_rate, rng, ms=10_000.0):
    for i in range(n):
        with fw.task(session_id=f"s{i % 50}", input="q") as task:
            # each task lasts ``ms`` plus the microseconds the block takes: a loaded
            # machine that stretches the block to milliseconds is then no latency change
            task.started_at -= ms / 1000
            task.finish(output="a", success=rng.random() >= fail_rate)
    fw.flush()


def test_a_drop_in_success_raises_one_alert_and_makes_a_cycle_due(settings, store):
    import flywheel

    rng = random.Random(3)
    fw = flywheel.init("shop", settings=settings)
    log(fw, 700, 0.1, rng)
    assert detect(store, "shop") == []
    log(fw, 200, 0.5, rng)
    fw.close()
    found = detect(store, "shop")
    assert [a["metric"] for a in found] == ["failure"]
    assert found[0]["reference_rate"] < 0.2 < found[0]["recent_rate"]
    detect(store, "shop")  # seen again: still one alert
    assert len(open_alerts(store, "shop")) == 1
    events = [e for e in store.audit_events("workload") if e.action == "alert.degradation"]
    assert len(events) == 1 and events[0].record_id == "shop"
    trigger = due(store, "shop", every_seconds=0, last_start=time.monotonic(), on_degradation=True)
    assert trigger == "degradation"
    assert due(store, "shop", every_seconds=0, last_start=time.monotonic(), on_degradation=False) is None

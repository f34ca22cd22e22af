"""Degradation detection benchmark: false alarms and detection delay.

    python bench/drift.py [--runs 400] [--seed 0]

Simulated live traffic of a workload, task by task (a simulator: each task
fails with a fixed probability). For each base failure rate, measured in the
same run:

* **false alarms** on stationary traffic: the share of runs of 2,000 tasks
  (after the 500-task reference) in which the detector fires at all;
* **detection delay** after an injected rise of the failure rate by 10, 15,
  20 and 30 points: the median and 90th percentile of tasks between the
  change and the alarm, and the share of changes missed within 2,000 tasks.

Detectors: ``flywheel.deploy.drift`` (Bernoulli CUSUM, its default policy)
and the baseline a dashboard alert would use: a rolling window of the last 100
tasks whose failure rate exceeds the reference rate by 3 standard errors (and
by 4.5, which brings its false alarms near CUSUM's, for a fair delay).
Prints a table; JSON to bench/results/drift.json.
"""

from __future__ import annotations

import argparse
import json
import math
import random
import statistics
from pathlib import Path

from flywheel.deploy.drift import DriftPolicy, cusum_bernoulli, reference_rate

ROOT = Path(__file__).resolve().parents[1]
HORIZON = 2000


def window_alarm(
    xs: list[bool], p0: float, before: list[bool], window: int = 100, z: float = 3.0
) -> int | None:
    """Index (in ``xs``) where the failure rate of the last ``window`` tasks (full
    from the start: it holds the tail of the reference) exceeds the limit."""
    limit = p0 + z * math.sqrt(max(p0 * (1 - p0), 1e-4) / window)
    seq = before[-window:] + xs
    total = sum(seq[:window])
    for i in range(window, len(seq)):
        total += seq[i] - seq[i - window]
        if total / window > limit:
            return i - window
    return None


def run(args: argparse.Namespace) -> dict[str, object]:
    rng = random.Random(args.seed)
    policy = DriftPolicy()
    detectors = {
        "cusum": lambda xs, p0, before: cusum_bernoulli(xs, p0, policy.shift, policy.threshold),
        "window": window_alarm,
        "window_strict": lambda xs, p0, before: window_alarm(xs, p0, before, z=4.5),
    }
    rows = []
    for base in (0.1, 0.2, 0.3):
        for rise in (0.0, 0.10, 0.15, 0.20, 0.30):
            result = {"base_failure_rate": base, "rise": rise}
            for name, detect in detectors.items():
                delays, missed, alarms = [], 0, 0
                for _ in range(args.runs):
                    reference = [rng.random() < base for _ in range(policy.reference)]
                    p0 = reference_rate(reference) if name == "cusum" else sum(reference) / len(reference)
                    live = [rng.random() < base + rise for _ in range(HORIZON)]
                    at = detect(live, p0, reference)
                    if rise == 0.0:
                        alarms += at is not None
                    elif at is None:
                        missed += 1
                    else:
                        delays.append(at + 1)
                if rise == 0.0:
                    result[f"{name}_false_alarm_share"] = alarms / args.runs
                else:
                    result[f"{name}_median_delay"] = statistics.median(delays) if delays else None
                    result[f"{name}_p90_delay"] = (
                        statistics.quantiles(delays, n=10)[-1] if len(delays) >= 10 else None
                    )
                    result[f"{name}_missed_share"] = missed / args.runs
            rows.append(result)
    return {"runs": args.runs, "horizon_tasks": HORIZON, "policy": policy.__dict__, "rows": rows}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--runs", type=int, default=400)
    parser.add_argument("--seed", type=int, default=0)
    report = run(parser.parse_args())
    names = ("cusum", "window", "window_strict")
    heads = ("CUSUM (ours)", "window of 100, 3 SE", "window of 100, 4.5 SE")
    print(f"{'base':>5} {'rise':>5} | " + " | ".join(f"{h:^34}" for h in heads))
    print(f"{'':>5} {'':>5} | " + " | ".join(f"{'delay median / p90, missed':^34}" for _ in heads))
    for r in report["rows"]:  # type: ignore[union-attr]
        cells = []
        for name in names:
            if r["rise"] == 0.0:
                cells.append(f"false alarms in {r[f'{name}_false_alarm_share']:.1%} of runs")
            else:
                med, p90 = r[f"{name}_median_delay"], r[f"{name}_p90_delay"]
                cells.append(f"{med} / {p90} tasks, missed {r[f'{name}_missed_share']:.0%}")
        print(f"{r['base_failure_rate']:>5} {r['rise']:>5} | " + " | ".join(f"{c:^34}" for c in cells))
    out = ROOT / "bench" / "results" / "drift.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=2))
    print(f"wrote {out}")


if __name__ == "__main__":
    main()

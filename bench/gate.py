"""The promotion gate by simulation: false promotions and power.

    python bench/gate.py [--runs 1000] [--seed 0] [--alpha 0.05] [--break-rate 0.1]

A simulator, not models: each held-out item is answered by a baseline right
on a share ``base`` of items and by a candidate whose accuracy is higher by a
true ``gain`` (0, 5, 10, 20 points). Discordance is realistic: the candidate
breaks ``--break-rate`` (10%) of the baseline's right answers and fixes
enough of its wrong ones to make the gain (so at base 0.7 and no gain, 14% of
items are discordant; the issue's demo saw 18%). For each base accuracy
(0.1, 0.4, 0.7) and eval-set size n (30, 100, 300, 1000), ``--runs``
evaluations go through ``compare`` and ``gate`` with the default policy:

* **exact**: the plain paired outcomes; the share promoted (false promotions
  at gain 0, which must stay <= alpha; power above), the exact power the
  gate computes (``paired_power``), the smallest gain it states it can detect
  (``power.mde``, mean) and the items it asks for (``needed_items``, median).
* **reweighted**: half the items are the baseline's own labelled traffic
  (users confirm 60% of its right answers and correct 15% of its wrong ones,
  so its successes are over-represented), half other traffic; 200 rated
  tasks give the baseline's traffic accuracy. The gain is the gain on its
  traffic. Also: the share of runs with an empty stratum.
* **sequential**: the anytime-valid e-value checked after every item
  (``decision["sequential"]``, the most aggressive use): the share stopped on
  a win (false at gain 0), the share stopped on a wrong-way loss, and the mean
  items evaluated (n when it never stopped).

Same-run baseline: the rules this gate replaced, on the same simulated
evaluations: the plain 95% bootstrap CI's lower bound > 0, and the reweighted
CI (items resampled, an empty stratum at its worst) lower bound > 0.

Prints three tables; JSON to bench/results/gate.json.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

from flywheel.evaluate.offline import GatePolicy, ItemResult, compare, gate  # noqa: E402
from flywheel.evaluate.stats import paired_power  # noqa: E402

BASES = (0.1, 0.4, 0.7)
SIZES = (30, 100, 300, 1000)
GAINS = (0.0, 0.05, 0.10, 0.20)
CONFIRM, CORRECT, RATED = 0.6, 0.15, 200


RIGHT, WRONG = ItemResult("-", "c", True, 1.0, 10, 10, None), ItemResult("-", "c", False, 1.0, 10, 10, None)
IDS = [f"i{k}" for k in range(max(SIZES))]


def _results(right: np.ndarray) -> dict[str, ItemResult]:
    """An item's result, shared between items (compare reads it, never writes)."""
    return {IDS[k]: RIGHT if r else WRONG for k, r in enumerate(right.tolist())}


def _candidate(rng: np.random.Generator, base: np.ndarray, fix: float, brk: float) -> np.ndarray:
    u = rng.random(len(base))
    return np.where(base, u >= brk, u < fix)


def _old_reweighted(origin: list[str], a: np.ndarray, b: np.ndarray, up: int, down: int, rng: np.random.Generator) -> float:
    """The lower bound of the rule replaced: items resampled within each group,
    an empty group at its worst for the candidate (-1 confirmed, 0 corrected)."""
    reps = 2000
    diffs = b.astype(float) - a.astype(float)
    groups = {g: diffs[[o == g for o in origin]] for g in ("baseline_confirmed", "baseline_corrected", "other_traffic")}
    own = len(groups["baseline_confirmed"]) + len(groups["baseline_corrected"])

    def means(values: np.ndarray, empty: float) -> np.ndarray:
        if not len(values):
            return np.full(reps, empty)
        kinds, counts = np.unique(values, return_counts=True)
        return rng.multinomial(len(values), counts / len(values), size=reps) @ kinds / len(values)

    p = rng.beta(up + 1, down + 1, size=reps)
    other = groups["other_traffic"]
    stats = (
        own * (p * means(groups["baseline_confirmed"], -1.0) + (1 - p) * means(groups["baseline_corrected"], 0.0))
        + len(other) * means(other, 0.0)
    ) / (own + len(other))
    return float(np.sort(stats)[int(0.025 * reps)])


def simulate(base: float, n: int, gain: float, args: argparse.Namespace, rng: np.random.Generator) -> dict[str, Any]:
    brk = args.break_rate
    fix = (gain + brk * base) / (1 - base)
    policy = GatePolicy(alpha=args.alpha)
    plain = {"promoted": 0, "old_promoted": 0, "mde": [], "needed": []}
    seq = {"win": 0, "loss": 0, "items": []}
    weighted = {"promoted": 0, "old_promoted": 0, "empty": 0}
    confirmed_share = CONFIRM * base / (CONFIRM * base + CORRECT * (1 - base))
    for _ in range(args.runs):
        # plain: items drawn from the traffic
        a = rng.random(n) < base
        b = _candidate(rng, a, fix, brk)
        comparison = compare(_results(a), _results(b))
        decision = gate(comparison, policy)
        plain["promoted"] += decision["promote"]
        plain["old_promoted"] += comparison["ci95"][0] > 0
        plain["mde"].append(decision["power"]["mde"])
        plain["needed"].append(decision["power"]["needed_items"])
        verdict = decision["sequential"]
        seq["win"] += verdict["decision"] == "win"
        seq["loss"] += verdict["decision"] == "loss"
        seq["items"].append(verdict["stopped_at"] or n)

        # reweighted: half the baseline's own labelled items, half other traffic
        own = n // 2
        confirmed = rng.random(own) < confirmed_share
        a_own = confirmed  # right on its confirmed answers, wrong on its corrected ones
        a_other = rng.random(n - own) < base
        a2 = np.concatenate([a_own, a_other])
        b2 = _candidate(rng, a2, fix, brk)
        origin = ["baseline_confirmed" if c else "baseline_corrected" for c in confirmed] + ["other_traffic"] * (n - own)
        up = int(rng.binomial(RATED, base))
        ratings = {"up": up, "down": RATED - up}
        comparison = compare(
            _results(a2),
            _results(b2),
            origin_of={f"i{k}": o for k, o in enumerate(origin)},
            baseline_ratings=ratings,
        )
        decision = gate(comparison, policy)
        weighted["promoted"] += decision["promote"]
        weighted["empty"] += bool(comparison["reweighted"]["empty_strata"])
        weighted["old_promoted"] += _old_reweighted(origin, a2, b2, ratings["up"], ratings["down"], rng) > 0
    runs = args.runs
    mdes = [m for m in plain["mde"] if m is not None]
    needed = [m for m in plain["needed"] if m is not None]
    discordance = 2 * brk * base + gain
    return {
        "base_accuracy": base,
        "n": n,
        "gain": gain,
        "discordance": discordance,
        "exact_promoted": plain["promoted"] / runs,
        "exact_power_computed": paired_power(n, discordance, gain, alpha=args.alpha),
        "stated_mde_mean": statistics.fmean(mdes) if mdes else None,
        "stated_mde_none_share": 1 - len(mdes) / runs,
        "needed_items_median": statistics.median(needed) if needed else None,
        "old_ci_promoted": plain["old_promoted"] / runs,
        "reweighted_promoted": weighted["promoted"] / runs,
        "reweighted_old_promoted": weighted["old_promoted"] / runs,
        "reweighted_empty_stratum_share": weighted["empty"] / runs,
        "sequential_win": seq["win"] / runs,
        "sequential_loss": seq["loss"] / runs,
        "sequential_items_mean": statistics.fmean(seq["items"]),
    }


def _pct(x: float | None) -> str:
    return "-" if x is None else f"{x:.1%}"


def print_tables(rows: list[dict[str, Any]], alpha: float) -> None:
    by = {(r["base_accuracy"], r["n"], r["gain"]): r for r in rows}
    gains = " ".join(f"{f'+{g * 100:.0f}':>7}" for g in GAINS[1:])
    print(f"\nExact test (alpha {alpha}): share promoted; false at +0 must be <= alpha")
    print(f"{'base':>4} {'n':>5} | {'+0':>6} {gains} | {'computed power':^23} | {'MDE':>6} {'needed':>6} | {'old CI rule: +0, +5':>20}")
    for base in BASES:
        for n in SIZES:
            r0 = by[(base, n, 0.0)]
            cells = " ".join(f"{by[(base, n, g)]['exact_promoted']:>7.1%}" for g in GAINS[1:])
            computed = " ".join(f"{by[(base, n, g)]['exact_power_computed']:>7.1%}" for g in GAINS[1:])
            r5 = by[(base, n, 0.05)]
            needed = r5["needed_items_median"]
            print(
                f"{base:>4} {n:>5} | {r0['exact_promoted']:>6.1%} {cells} | {computed} | {_pct(r5['stated_mde_mean']):>6} "
                f"{needed if needed is not None else '-':>6} | {r0['old_ci_promoted']:>9.1%} {r5['old_ci_promoted']:>9.1%}"
            )
    print("\nReweighted path (half the items the baseline's own labels): share promoted")
    print(f"{'base':>4} {'n':>5} | {'+0':>6} {gains} | {'empty stratum':>13} | {'old rule: +0, +5, +10':>24}")
    for base in BASES:
        for n in SIZES:
            r0 = by[(base, n, 0.0)]
            cells = " ".join(f"{by[(base, n, g)]['reweighted_promoted']:>7.1%}" for g in GAINS[1:])
            old = " ".join(f"{by[(base, n, g)]['reweighted_old_promoted']:>7.1%}" for g in GAINS[:3])
            print(
                f"{base:>4} {n:>5} | {r0['reweighted_promoted']:>6.1%} {cells} | "
                f"{r0['reweighted_empty_stratum_share']:>13.1%} | {old}"
            )
    print("\nSequential e-value, looked at after every item: stopped on a win (false at +0), on a loss at +gain, mean items")
    print(f"{'base':>4} {'n':>5} | {'+0':>6} {gains} | {'wrong-way loss':>14} | {'mean items at +0 +5 +10 +20':>30}")
    for base in BASES:
        for n in SIZES:
            r0 = by[(base, n, 0.0)]
            cells = " ".join(f"{by[(base, n, g)]['sequential_win']:>7.1%}" for g in GAINS[1:])
            wrong = max(by[(base, n, g)]["sequential_loss"] for g in GAINS[1:])
            items = " ".join(f"{by[(base, n, g)]['sequential_items_mean']:>7.0f}" for g in GAINS)
            print(f"{base:>4} {n:>5} | {r0['sequential_win']:>6.1%} {cells} | {wrong:>14.1%} | {items}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--runs", type=int, default=1000)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--alpha", type=float, default=0.05)
    parser.add_argument("--break-rate", type=float, default=0.1)
    args = parser.parse_args()
    rng = np.random.default_rng(args.seed)
    started = time.monotonic()
    rows = [simulate(base, n, gain, args, rng) for base in BASES for n in SIZES for gain in GAINS]
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True).stdout.strip()
    report = {
        "backend": "simulation (no model, no store)",
        "commit": commit,
        "runs": args.runs,
        "alpha": args.alpha,
        "break_rate": args.break_rate,
        "policy": GatePolicy(alpha=args.alpha).__dict__,
        "seconds": round(time.monotonic() - started, 1),
        "rows": rows,
    }
    print_tables(rows, args.alpha)
    worst = max(r["exact_promoted"] for r in rows if r["gain"] == 0)
    worst_w = max(r["reweighted_promoted"] for r in rows if r["gain"] == 0)
    worst_s = max(r["sequential_win"] for r in rows if r["gain"] == 0)
    print(f"\nworst false-promotion rate: exact {worst:.1%}, reweighted {worst_w:.1%}, sequential {worst_s:.1%} (alpha {args.alpha:.0%}); {report['seconds']} s")
    out = ROOT / "bench" / "results" / "gate.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=2))
    print(f"wrote {out}")


if __name__ == "__main__":
    main()

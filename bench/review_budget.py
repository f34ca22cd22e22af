"""Review budget benchmark: held-out gain per correction when each cycle's review
budget goes to the items of highest expected value (``flywheel.curate.priority``,
the scorer curation and the cycle use) vs items drawn at random from the same queue.

    python bench/review_budget.py [--seeds 20] [--cycles 6] [--budget 50]

**This is a simulation, not a measurement of a model.** No model is trained and
no task is served: a synthetic workload stands in for both, so that the run takes
seconds on a CPU. What it shows is how the ranking behaves *under the assumptions
built into the simulator*; it does not show that a real student gains as much.
The assumptions:

* A workload of intents x tools (10 intents, each using 3 of 16 tools: 30
  strata). Traffic per stratum follows a Zipf law (exponent 1.2) in the
  ``long tail`` scenario, and is uniform in the ``flat`` control.
* The student's accuracy on a stratum grows with the labelled examples it has
  there, with diminishing returns: ``acc = c - (c - 0.1) * exp(-k / 6)``
  (``c`` ~ U(0.85, 0.97)); labels of the same tool in other intents count a
  fifth. A correction adds 1 to ``k``; a confirmed right answer 0.3. History:
  2,000 past labels spread by traffic, a fifth of them held out as the eval set,
  so in the long tail the rare strata have few eval items and low accuracy, and
  they hold most of the held-out error.
* Each cycle logs 4,000 tasks. An answer is right with the stratum's accuracy;
  its logged confidence is Beta(5, 2) when right and Beta(2, 3) when wrong;
  90% claim success; a user reacts badly to 35% of wrong answers that claim
  success and to 3% of right ones; 8% see a tool error. The default rules' review
  conditions (confidence < 0.3, a bad reaction, a tool error) fill the queue,
  which carries over between cycles.
* A label (a reviewed item) joins the eval set with probability 0.2 (the split),
  else trains. Held-out accuracy is the traffic-weighted expected accuracy.

Policies (each seed runs all of them on the same random numbers): ``expected
value`` (``Scorer`` with the default weights, coverage counted per tool and
intent in the eval set), ``random``, and three ablations, ``confidence only``
(lowest confidence first), ``without coverage`` (the coverage weight 0) and
``coverage only`` (weights 0, 0, 1, 0).

Reports per scenario and policy: held-out accuracy before and after, the gain in
points, corrections and labels used, the gain per correction and per 100 labels
(mean and 95% CI over seeds), and the strata left with fewer than 3 eval items.
A table on stdout; JSON to bench/results/review_budget.json.
"""

from __future__ import annotations

import argparse
import json
import math
import random
import statistics
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

from flywheel.curate.priority import Coverage, Scorer, disagreement_of, uncertainty_of
from flywheel.curate.rules import ReviewPriority

ROOT = Path(__file__).resolve().parents[1]
INTENTS, TOOLS, TOOLS_PER_INTENT = 12, 20, 4
HISTORY, TRAFFIC, EVAL_SHARE = 600, 4000, 0.2
FLOOR, TAU, SPILL = 0.1, 10.0, 0.2
POLICIES = ("expected value", "random", "confidence only", "without coverage", "coverage only")
#: the weights of the policies that rank with ``Scorer``
WEIGHTS = {
    "expected value": ReviewPriority(),
    "without coverage": ReviewPriority(coverage=0),
    "coverage only": ReviewPriority(uncertainty=0, disagreement=0, coverage=1, novelty=0),
}


@dataclass
class World:
    """One seed's workload: strata, traffic shares, ceilings, labels so far."""

    strata: list[tuple[str, str]]
    share: list[float]
    ceiling: list[float]
    trained: list[float] = field(default_factory=list)  # label units that trained, per stratum
    evals: list[int] = field(default_factory=list)  # eval items per stratum

    def accuracy(self, s: int) -> float:
        tool = self.strata[s][1]
        spill = sum(k for j, k in enumerate(self.trained) if j != s and self.strata[j][1] == tool)
        k = self.trained[s] + SPILL * spill
        return self.ceiling[s] - (self.ceiling[s] - FLOOR) * math.exp(-k / TAU)

    def held_out(self) -> float:
        return sum(p * self.accuracy(s) for s, p in enumerate(self.share))

    def copy(self) -> World:
        return World(self.strata, self.share, self.ceiling, list(self.trained), list(self.evals))


def make_world(seed: int, scenario: str) -> World:
    rng = random.Random(seed)
    tools = [f"tool_{i}" for i in range(TOOLS)]
    strata = [(f"intent_{i}", tool) for i in range(INTENTS) for tool in rng.sample(tools, TOOLS_PER_INTENT)]
    if scenario == "long tail":
        weights = [1 / (rank + 1) ** 1.1 for rank in range(len(strata))]
        rng.shuffle(weights)
    else:
        weights = [1.0] * len(strata)
    total = sum(weights)
    share = [w / total for w in weights]
    world = World(strata, share, [rng.uniform(0.85, 0.97) for _ in strata])
    world.trained = [0.0] * len(strata)
    world.evals = [0] * len(strata)
    for _ in range(HISTORY):  # past labels, by traffic: a fifth held out
        s = rng.choices(range(len(strata)), share)[0]
        if rng.random() < EVAL_SHARE:
            world.evals[s] += 1
        else:
            world.trained[s] += 1.0
    return world


@dataclass
class Item:
    stratum: int
    right: bool
    confidence: float
    signal: str | None
    to_eval: bool  # where its label would go (the split)


def log_traffic(world: World, rng: random.Random) -> list[Item]:
    """A cycle's tasks; those the default rules send to review."""
    queue = []
    accuracy = [world.accuracy(s) for s in range(len(world.strata))]
    for s in rng.choices(range(len(world.strata)), world.share, k=TRAFFIC):
        right = rng.random() < accuracy[s]
        confidence = rng.betavariate(5, 2) if right else rng.betavariate(2, 3)
        success = rng.random() < 0.9
        negative = rng.random() < (0.35 if (not right and success) else 0.03)
        tool_error = rng.random() < 0.08
        to_eval = rng.random() < EVAL_SHARE
        if not (confidence < 0.3 or negative or tool_error):
            continue
        if negative and success:
            signal: str | None = "negative_on_success"
        elif tool_error and success:
            signal = "tool_error_on_success"
        elif not success or negative:
            signal = "failed"
        else:
            signal = None
        queue.append(Item(s, right, round(confidence, 3), signal, to_eval))
    return queue


def choose(policy: str, world: World, queue: list[Item], budget: int, rng: random.Random) -> list[int]:
    """Positions in ``queue`` of the items the policy labels this cycle."""
    if policy == "random":
        return rng.sample(range(len(queue)), min(budget, len(queue)))
    if policy == "confidence only":
        return sorted(range(len(queue)), key=lambda i: queue[i].confidence)[:budget]
    tools: dict[str, int] = {}
    intents: dict[str, int] = {}
    for (intent, tool), n in zip(world.strata, world.evals, strict=True):
        tools[tool] = tools.get(tool, 0) + n
        intents[intent] = intents.get(intent, 0) + n
    examples: dict[str, int] = {}
    for item in queue:
        tool = world.strata[item.stratum][1]
        examples[tool] = examples.get(tool, 0) + 1
    weights = WEIGHTS[policy]
    score = Scorer(Coverage(tools, intents, "eval set", examples), weights).score
    values = []
    for i, item in enumerate(queue):
        intent, tool = world.strata[item.stratum]
        priority, _ = score(
            uncertainty_of(item.confidence), disagreement_of(item.signal), (tool,), intent, "doubtful"
        )
        values.append((-priority, i))
    return [i for _, i in sorted(values)[:budget]]


def run_policy(policy: str, seed: int, scenario: str, cycles: int, budget: int) -> dict[str, float]:
    world = make_world(seed, scenario)
    start = world.held_out()
    queue: list[Item] = []
    corrections = labels = 0
    for cycle in range(cycles):
        rng = random.Random(f"{seed}:{cycle}")  # the same traffic draws for every policy
        queue.extend(log_traffic(world, rng))
        chosen = set(choose(policy, world, queue, budget, random.Random(f"{seed}:{cycle}:pick")))
        for i in chosen:
            item = queue[i]
            labels += 1
            if item.to_eval:
                world.evals[item.stratum] += 1
                continue
            world.trained[item.stratum] += 0.3 if item.right else 1.0
            corrections += not item.right
        queue = [item for i, item in enumerate(queue) if i not in chosen]
    end = world.held_out()
    gain = 100 * (end - start)
    return {
        "start": 100 * start,
        "end": 100 * end,
        "gain_points": gain,
        "corrections": corrections,
        "labels": labels,
        "gain_per_correction": gain / corrections if corrections else 0.0,
        "gain_per_100_labels": 100 * gain / labels if labels else 0.0,
        "thin_strata": sum(1 for n in world.evals if n < 3),
    }


def summarise(values: list[float]) -> dict[str, float]:
    mean = statistics.fmean(values)
    half = 1.96 * statistics.stdev(values) / math.sqrt(len(values)) if len(values) > 1 else 0.0
    return {"mean": mean, "ci95": [mean - half, mean + half]}


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--seeds", type=int, default=20)
    parser.add_argument("--cycles", type=int, default=6)
    parser.add_argument("--budget", type=int, default=50)
    args = parser.parse_args()
    started = time.perf_counter()
    report: dict[str, object] = {
        "backend": "simulation (no model, no store)",
        "size": {
            "seeds": args.seeds,
            "cycles": args.cycles,
            "budget": args.budget,
            "tasks_per_cycle": TRAFFIC,
        },
        "commit": subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, cwd=ROOT
        ).stdout.strip(),
        "scenarios": {},
    }
    header = f"{'scenario':<10}{'policy':<17}{'held out':>18}{'gain pts':>10}{'corr.':>7}{'labels':>7}"
    header += f"{'gain/corr. [95% CI]':>26}{'gain/100 labels':>17}{'thin strata':>13}"
    print(header)
    for scenario in ("long tail", "flat"):
        runs = {
            p: [run_policy(p, seed, scenario, args.cycles, args.budget) for seed in range(args.seeds)]
            for p in POLICIES
        }
        rows = {}
        for policy, results in runs.items():
            row = {key: summarise([r[key] for r in results]) for key in results[0]}
            rows[policy] = row
            per = row["gain_per_correction"]
            print(
                f"{scenario:<10}{policy:<17}{row['start']['mean']:>8.1f} -> {row['end']['mean']:>5.1f}%"
                f"{row['gain_points']['mean']:>10.2f}{row['corrections']['mean']:>7.0f}{row['labels']['mean']:>7.0f}"
                f"{per['mean']:>9.3f} [{per['ci95'][0]:.3f}, {per['ci95'][1]:.3f}]"
                f"{row['gain_per_100_labels']['mean']:>17.2f}{row['thin_strata']['mean']:>13.1f}"
            )
        paired = [
            a["gain_points"] - b["gain_points"]
            for a, b in zip(runs["expected value"], runs["random"], strict=True)
        ]
        rows["expected value - random (gain points, paired by seed)"] = summarise(paired)
        diff = rows["expected value - random (gain points, paired by seed)"]
        print(
            f"{scenario:<10}{'EV - random':<17} held-out gain {diff['mean']:+.2f} points "
            f"[{diff['ci95'][0]:+.2f}, {diff['ci95'][1]:+.2f}] (paired by seed)"
        )
        report["scenarios"][scenario] = rows  # type: ignore[index]
    report["seconds"] = round(time.perf_counter() - started, 1)
    out = ROOT / "bench" / "results" / "review_budget.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=2))
    print(f"{report['seconds']} s; JSON in {out}")


if __name__ == "__main__":
    main()

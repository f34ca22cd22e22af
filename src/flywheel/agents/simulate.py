"""The traffic simulator (a simulator, named as such everywhere): replays a
workload as production traffic through the real SDK path.

Each simulated request asks ``fw.agent_config(session)`` which version serves
its session (so canaries work), runs the agent with that version's config,
and then a simulated user reacts, following the truth with some noise:
thumbs and ratings, retries and abandonment after wrong answers, and on a
share of failures an edit (a corrected call) some time later. Nothing in the
product depends on this module.
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from flywheel.agents.tool_agent import AgentConfig, ToolAgent
from flywheel.evaluate.ast_check import check_calls
from flywheel.models.base import ChatModel
from flywheel.sdk.client import Flywheel
from flywheel.workloads.bfcl import WorkloadItem
from flywheel.workloads.bfcl_multi import BfclEnvironment, MultiTurnItem, expected_states

__all__ = ["Served", "SimulatedUsers", "serve", "simulate"]

Item = WorkloadItem | MultiTurnItem


@dataclass
class SimulatedUsers:
    """How simulated users react. Rates are probabilities per task."""

    feedback_rate: float = 0.6  # give thumbs (and sometimes a rating) at all
    noise: float = 0.05  # the reaction contradicts the truth
    retry_rate: float = 0.3  # retry after a wrong answer
    abandon_rate: float = 0.2  # give up after a wrong answer
    correction_rate: float = 0.2  # edit (correct) a wrong answer
    max_delay_s: float = 900.0  # feedback arrives up to this long after the task

    def __post_init__(self) -> None:
        for name in ("feedback_rate", "noise", "retry_rate", "abandon_rate", "correction_rate"):
            value = getattr(self, name)
            if not 0.0 <= value <= 1.0:
                raise ValueError(f"{name} must be between 0 and 1, not {value}")


@dataclass
class Served:
    task_id: str
    item_id: str
    category: str
    correct: bool
    success: bool
    seconds: float
    cost: float
    version: str | None


@dataclass
class SimulationReport:
    served: list[Served] = field(default_factory=list)
    feedback: int = 0
    corrections: int = 0

    def as_dict(self) -> dict[str, Any]:
        n = len(self.served)
        correct = sum(s.correct for s in self.served)
        by_category: dict[str, list[int]] = {}
        for s in self.served:
            by_category.setdefault(s.category, [0, 0])
            by_category[s.category][0] += s.correct
            by_category[s.category][1] += 1
        return {
            "simulated": True,
            "tasks": n,
            "correct": correct,
            "accuracy": correct / n if n else None,
            "by_category": {c: {"correct": a, "tasks": b} for c, (a, b) in sorted(by_category.items())},
            "feedback": self.feedback,
            "corrections": self.corrections,
            "seconds_per_task": sum(s.seconds for s in self.served) / n if n else None,
            "cost_per_task": sum(s.cost for s in self.served) / n if n else None,
            "versions": sorted({s.version or "base" for s in self.served}),
        }


def serve(fw: Flywheel, agent: ToolAgent, item: Item, session_id: str) -> Served:
    """Run one request through the agent and the SDK; judge it against the truth."""
    started = time.perf_counter()
    metadata = {"item_id": item.id, "category": item.category, "simulated": True}
    with fw.task(
        session_id=session_id, input=item.question, metadata=metadata, agent_version=agent.config.version_id
    ) as task:
        if isinstance(item, MultiTurnItem):
            env = BfclEnvironment(item)
            states: list[dict[str, Any]] = []
            outcome = agent.converse(
                task, item.turns, item.tools, env, on_turn_end=lambda _: states.append(env.state())
            )
            correct = states == expected_states(item)
        else:
            outcome = agent.answer(task, item.messages, item.tools)
            correct = check_calls(outcome.calls, item.expected, item.functions).correct
    return Served(
        task.id,
        item.id,
        item.category,
        correct,
        outcome.success,
        time.perf_counter() - started,
        outcome.cost,
        agent.config.version_id,
    )


def _react(
    fw: Flywheel,
    served: Served,
    item: Item,
    users: SimulatedUsers,
    rng: random.Random,
    report: SimulationReport,
) -> None:
    seems_right = served.correct != (rng.random() < users.noise)
    at = time.time() + rng.uniform(1.0, users.max_delay_s)
    if rng.random() < users.feedback_rate:
        if seems_right:
            fw.feedback(
                served.task_id,
                thumbs=1,
                rating=rng.choice([4, 5]) if rng.random() < 0.5 else None,
                source="simulated-user",
                at=at,
            )
        else:
            fw.feedback(
                served.task_id,
                thumbs=-1,
                rating=rng.choice([1, 2]) if rng.random() < 0.5 else None,
                source="simulated-user",
                at=at,
            )
        report.feedback += 1
    if served.correct:
        return
    if rng.random() < users.retry_rate:
        fw.feedback(served.task_id, retried=True, source="simulated-user", at=at)
        report.feedback += 1
    elif rng.random() < users.abandon_rate:
        fw.feedback(served.task_id, abandoned=True, source="simulated-user", at=at)
        report.feedback += 1
    if rng.random() < users.correction_rate:
        if isinstance(item, MultiTurnItem):
            calls = [c for turn in item.ground_truth for c in turn]
        else:
            calls = item.reference_calls()
        fw.feedback(served.task_id, edited=True, edited_output=calls, source="simulated-user", at=at)
        fw.correct(served.task_id, tool_calls=calls, author="simulated-user", at=at)
        report.corrections += 1


def simulate(
    fw: Flywheel,
    items: list[Item],
    model_for: Callable[[AgentConfig], ChatModel],
    *,
    tasks: int,
    sessions: int,
    seed: int = 0,
    users: SimulatedUsers | None = None,
    default_model: str = "local",
    progress: Callable[[int], None] | None = None,
) -> SimulationReport:
    """Serve ``tasks`` requests drawn from ``items`` over ``sessions`` sessions."""
    if not items:
        raise ValueError("no workload items to simulate")
    users = users or SimulatedUsers()
    rng = random.Random(seed)
    report = SimulationReport()
    for i in range(tasks):
        item = items[rng.randrange(len(items))]
        session = f"sim-{seed}-{rng.randrange(sessions)}"
        config = AgentConfig.from_version(
            fw.agent_config(session_id=session), model=default_model, artefacts=fw.artefact
        )
        agent = ToolAgent(model_for(config), config)
        served = serve(fw, agent, item, session)
        report.served.append(served)
        _react(fw, served, item, users, rng, report)
        if progress:
            progress(i + 1)
    return report

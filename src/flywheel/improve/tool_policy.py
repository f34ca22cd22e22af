"""Tool-policy strategy: per-intent tool statistics become preferences and avoidances.

The workload's recent tasks (up to the dataset's cutoff, at most
``max_tasks``) are grouped into intents: leader clustering of their requests
on local sentence embeddings. Per intent and tool: calls, error rate, retry
rate, fallback use and mean latency. Within an intent, a tool that fails at
least ``avoid_error_rate`` of its calls is avoided, and the reliable tools
(error rate at most ``prefer_error_rate``) are preferred, fastest first. A
tool that fails nearly always wherever it is used is denied outright: the
agent stops offering it (an allow/deny list the SDK side can enforce). The
version carries the policy, each intent with its centroid so the agent can
give a request the hint of its intent, and the statistics behind every
decision; the candidate is kept only if the evaluation shows it helps.
"""

from __future__ import annotations

import base64
import json
from collections import defaultdict
from dataclasses import dataclass
from typing import Any

import numpy as np
from sqlalchemy import and_, exists, select

from flywheel.errors import InvalidInput
from flywheel.improve.few_shot import Candidate, make_candidate
from flywheel.records import AgentVersion
from flywheel.store import Store
from flywheel.store import tables as t

__all__ = ["ToolPolicyStrategy"]


def _text(value: Any) -> str:
    return value if isinstance(value, str) else json.dumps(value, default=str)[:500]


@dataclass
class ToolPolicyStrategy:
    name: str = "tool_policy"
    k: int = 3  # accepted for a uniform interface; unused
    max_tasks: int = 5000
    min_calls: int = 5
    avoid_error_rate: float = 0.5
    prefer_error_rate: float = 0.1
    deny_error_rate: float = 0.9
    threshold: float = 0.6  # intent clustering: cosine to the intent's first request

    def _traffic(
        self, store: Store, workload: str, dataset_id: str
    ) -> tuple[dict[str, str], list[dict[str, Any]]]:
        cutoff = store.get_dataset(dataset_id)["cutoff"]
        tc, sc = t.tasks.c, t.steps.c
        has_tools = exists().where(and_(sc.task_id == tc.id, sc.kind == "tool_call"))
        query = select(tc.id, tc.input).where(tc.workload == workload, has_tools)
        if cutoff is not None:
            query = query.where(tc.ingested_at <= cutoff)
        with store.engine.connect() as conn:
            tasks = {
                i: _text(v)
                for i, v in conn.execute(query.order_by(tc.started_at.desc()).limit(self.max_tasks))
            }
            steps = [
                dict(r)
                for start in range(0, len(tasks), 5000)
                for r in conn.execute(
                    select(sc.task_id, sc.name, sc.error, sc.latency_ms, sc.data).where(
                        sc.kind == "tool_call", sc.task_id.in_(list(tasks)[start : start + 5000])
                    )
                ).mappings()
            ]
        return tasks, steps

    def build(self, store: Store, workload: str, dataset_id: str, current: AgentVersion | None) -> Candidate:
        from flywheel.models.embedding import Embedder

        tasks, steps = self._traffic(store, workload, dataset_id)
        if not steps:
            raise InvalidInput(
                f"workload {workload!r} has no tool calls up to dataset {dataset_id}'s cutoff",
                hint="tool policy learns from executed tool calls; log them with task.tool_call(...)",
            )
        ids = list(tasks)
        vectors = np.asarray(Embedder().embed([tasks[i] for i in ids]), dtype=np.float32)
        leaders: list[int] = []
        intent_of: dict[str, int] = {}
        for n, task_id in enumerate(ids):  # leader clustering, oldest first would also do
            if leaders:
                similarity = vectors[leaders] @ vectors[n]
                best = int(np.argmax(similarity))
                if similarity[best] >= self.threshold:
                    intent_of[task_id] = best
                    continue
            leaders.append(n)
            intent_of[task_id] = len(leaders) - 1
        stats: dict[int, dict[str, dict[str, float]]] = defaultdict(dict)
        for step in steps:
            intent = intent_of[step["task_id"]]
            row = stats[intent].setdefault(
                step["name"], {"calls": 0, "errors": 0, "retries": 0, "fallbacks": 0, "ms": 0.0}
            )
            data = step["data"] or {}
            row["calls"] += 1
            row["errors"] += step["error"] is not None
            row["retries"] += int(data.get("attempt") or 1) > 1
            row["fallbacks"] += bool(data.get("fallback"))
            row["ms"] += step["latency_ms"] or 0.0
        intents, changes = [], []
        worst: dict[str, list[float]] = defaultdict(list)  # tool -> its error rate in each intent
        for intent, tools in sorted(stats.items()):
            summary = {
                name: {
                    "calls": int(s["calls"]),
                    "error_rate": round(s["errors"] / s["calls"], 3),
                    "retry_rate": round(s["retries"] / s["calls"], 3),
                    "fallback_rate": round(s["fallbacks"] / s["calls"], 3),
                    "mean_ms": round(s["ms"] / s["calls"], 1),
                }
                for name, s in tools.items()
            }
            known = {n: s for n, s in summary.items() if s["calls"] >= self.min_calls}
            for name, s in known.items():
                worst[name].append(s["error_rate"])
            avoid = sorted(n for n, s in known.items() if s["error_rate"] >= self.avoid_error_rate)
            prefer = sorted(
                (n for n, s in known.items() if s["error_rate"] <= self.prefer_error_rate),
                key=lambda n: known[n]["mean_ms"],
            )
            if not avoid or not prefer:
                continue  # nothing to choose between
            name = tasks[ids[leaders[intent]]][:60]
            intents.append(
                {
                    "name": name,
                    "centroid": base64.b64encode(
                        vectors[leaders[intent]].astype(np.float16).tobytes()
                    ).decode(),
                    "prefer": prefer,
                    "avoid": avoid,
                    "stats": summary,
                }
            )
            reasons = ", ".join(
                f"{n} fails {known[n]['error_rate']:.0%} of {known[n]['calls']} calls" for n in avoid
            )
            changes.append(
                f"for requests like {name!r}: prefer {', '.join(prefer)}; avoid {avoid} ({reasons})"
            )
        deny = sorted(n for n, rates in worst.items() if min(rates) >= self.deny_error_rate)
        for name in deny:
            changes.append(
                f"deny {name}: fails at least {self.deny_error_rate:.0%} of its calls wherever it is used"
            )
        if not intents and not deny:
            raise InvalidInput(
                f"no tool of workload {workload!r} stands out: nothing to prefer or avoid "
                f"({len(steps)} tool calls in {len(leaders)} intents)",
                hint="tool policy needs intents where one tool fails and another works",
            )
        config: dict[str, Any] = dict(current.config) if current else {"model": "local"}
        policy = dict(config.get("tool_policy") or {})
        policy["deny"] = sorted(set(policy.get("deny") or []) | set(deny))
        policy["intents"] = intents
        policy["threshold"] = self.threshold
        config["tool_policy"] = policy
        return make_candidate(
            store,
            workload,
            config,
            strategy=self.name,
            dataset_id=dataset_id,
            current=current,
            changes=changes,
        )

"""Few-shot strategy: choose in-context examples from a dataset's few-shot pool.

Examples are scored by how typical their request is of the workload
(embedding similarity to the pool's centre), with human corrections
preferred; then chosen greedily by maximal marginal relevance (MMR) so they
are diverse, favouring tools not yet covered, until ``k`` examples or the
token budget is reached. The chosen examples go into a new candidate version,
with the reasons recorded.

This first version picks one static set per candidate; choosing per request
(nearest neighbours of each incoming question) is the next step.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from flywheel.deploy import create_version
from flywheel.errors import InvalidInput
from flywheel.models.base import last_user_text
from flywheel.records import AgentVersion
from flywheel.store import Store

__all__ = ["Candidate", "FewShotStrategy"]


@dataclass
class Candidate:
    version: AgentVersion
    changes: list[str] = field(default_factory=list)


def _tokens(text: str) -> int:
    return max(1, len(text) // 4)


def _called_tools(row: dict[str, Any]) -> list[dict[str, Any]]:
    """The declarations of the tools an example calls: a small model follows an
    example far better when it sees the functions the example used."""
    called = {c["name"] for c in row["target"]["tool_calls"]}
    return [tool for tool in row["tools"] or [] if (tool.get("function") or tool).get("name") in called]


@dataclass
class FewShotStrategy:
    name: str = "few_shot"
    k: int = 4
    token_budget: int = 600
    diversity: float = 0.5  # MMR trade-off: 1 = relevance only, 0 = diversity only

    def build(self, store: Store, workload: str, dataset_id: str, current: AgentVersion | None) -> Candidate:
        from flywheel.models.embedding import Embedder, cosine

        pool = [
            r
            for r in store.dataset_examples(dataset_id, "few_shot")
            if r["kind"] == "sft" and r["target"].get("tool_calls")
        ]
        if not pool:
            raise InvalidInput(
                f"dataset {dataset_id} has no few-shot pool with tool calls",
                hint="curate more traffic or raise splits.few_shot",
            )
        questions = [last_user_text(r["messages"]) for r in pool]
        vectors = Embedder().embed(questions)
        centre = [sum(column) / len(vectors) for column in zip(*vectors, strict=True)]
        relevance = [
            cosine(v, centre) + (0.2 if r["source"] == "correction" else 0.0)
            for v, r in zip(vectors, pool, strict=True)
        ]
        chosen: list[int] = []
        covered: set[str] = set()
        budget = self.token_budget
        while len(chosen) < self.k:
            best, best_score = None, float("-inf")
            for i, row in enumerate(pool):
                if i in chosen:
                    continue
                redundancy = max((cosine(vectors[i], vectors[j]) for j in chosen), default=0.0)
                tools = {c["name"] for c in row["target"]["tool_calls"]}
                novelty = 0.1 if tools - covered else 0.0
                score = self.diversity * relevance[i] - (1 - self.diversity) * redundancy + novelty
                if score > best_score:
                    best, best_score = i, score
            if best is None:
                break
            cost = _tokens(questions[best]) + _tokens(str(pool[best]["target"]))
            if cost > budget and chosen:
                break
            budget -= cost
            chosen.append(best)
            covered |= {c["name"] for c in pool[best]["target"]["tool_calls"]}
        shots = [
            {
                "question": questions[i],
                "calls": pool[i]["target"]["tool_calls"],
                "tools": _called_tools(pool[i]),
            }
            for i in chosen
        ]
        config: dict[str, Any] = dict(current.config) if current else {"model": "local"}
        config["few_shot"] = shots
        changes = []
        for n, i in enumerate(chosen):
            names = sorted({c["name"] for c in pool[i]["target"]["tool_calls"]})
            changes.append(
                f"few-shot example {n + 1}: {questions[i][:80]!r} ({pool[i]['source']}, tools {names})"
            )
        version = create_version(
            store,
            workload,
            config,
            parent_id=current.id if current else None,
            dataset_id=dataset_id,
            strategy=self.name,
        )
        return Candidate(version, changes)

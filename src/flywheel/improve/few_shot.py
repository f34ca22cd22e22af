"""Few-shot strategy: choose in-context examples from a dataset's few-shot pool.

Examples are scored by how typical their request is of the workload
(embedding similarity to the pool's centre), with human corrections
preferred; then chosen greedily by maximal marginal relevance (MMR) so they
are diverse, favouring tools not yet covered, until ``k`` examples or the
token budget is reached. The chosen examples go into a new candidate version,
with the reasons recorded.

Two modes: one static set per candidate, or per request: a pool of typical,
diverse examples pinned in the version with their embeddings (computed once
per example and kept in the store), from which the agent picks each
request's nearest neighbours.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from typing import Any

import numpy as np

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


def make_candidate(
    store: Store,
    workload: str,
    config: dict[str, Any],
    *,
    strategy: str,
    dataset_id: str,
    current: AgentVersion | None,
    changes: list[str],
) -> Candidate:
    """The candidate version of ``config``, a child of ``current``, with what changed."""
    version = create_version(
        store,
        workload,
        config,
        parent_id=current.id if current else None,
        dataset_id=dataset_id,
        strategy=strategy,
    )
    return Candidate(version, changes)


def _tokens(text: str) -> int:
    return max(1, len(text) // 4)


def _called_tools(row: dict[str, Any]) -> list[dict[str, Any]]:
    """The declarations of the tools an example calls: a small model follows an
    example far better when it sees the functions the example used."""
    called = {c["name"] for c in row["target"]["tool_calls"]}
    return [tool for tool in row["tools"] or [] if (tool.get("function") or tool).get("name") in called]


def _mmr(
    vectors: np.ndarray,
    relevance: np.ndarray,
    tools: list[set[str]],
    count: int,
    diversity: float,
    cost: list[int] | None = None,
    budget: int | None = None,
) -> list[int]:
    """Greedy maximal marginal relevance with a bonus for tools not yet covered."""
    chosen: list[int] = []
    covered: set[str] = set()
    redundancy = np.zeros(len(vectors), dtype=np.float32)
    while len(chosen) < min(count, len(vectors)):
        novelty = np.array([0.1 if t - covered else 0.0 for t in tools], dtype=np.float32)
        score = diversity * relevance - (1 - diversity) * redundancy + novelty
        score[chosen] = -np.inf
        best = int(np.argmax(score))
        if cost is not None and budget is not None:
            if cost[best] > budget and chosen:
                break
            budget -= cost[best]
        chosen.append(best)
        covered |= tools[best]
        redundancy = np.maximum(redundancy, vectors @ vectors[best])
    return chosen


@dataclass
class FewShotStrategy:
    """``per_request=False``: one fixed set of ``k`` examples in the version.
    ``per_request=True``: a pool of up to ``pool_size`` typical, diverse
    examples with their embeddings pinned in the version; the agent shows
    each request the ``k`` nearest of them (``AgentConfig.shots_for``). A pool
    larger than ``few_shot_pool.INLINE_LIMIT`` is pinned as an artefact with an
    approximate nearest-neighbour index; ``pool_size=0`` pins the whole split."""

    name: str = "few_shot"
    k: int = 4
    token_budget: int = 600
    diversity: float = 0.5  # MMR trade-off: 1 = relevance only, 0 = diversity only
    per_request: bool = False
    pool_size: int = 64

    def build(self, store: Store, workload: str, dataset_id: str, current: AgentVersion | None) -> Candidate:
        from flywheel.improve.embeddings import example_vectors
        from flywheel.models.embedding import Embedder

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
        embedder = Embedder()
        vectors = example_vectors(store, [r["id"] for r in pool], questions, embedder)
        centre = vectors.mean(axis=0)
        centre /= max(float(np.linalg.norm(centre)), 1e-9)
        corrected = np.array([0.2 if r["source"] == "correction" else 0.0 for r in pool], dtype=np.float32)
        relevance = vectors @ centre + corrected
        tools = [{c["name"] for c in r["target"]["tool_calls"]} for r in pool]
        config: dict[str, Any] = dict(current.config) if current else {"model": "local"}
        if self.per_request:
            from flywheel.agents.few_shot_pool import pool_config
            from flywheel.models.base import FewShot
            from flywheel.store.artefacts import put_artefact

            # MMR over the whole split costs pool_size passes over it: a pool of
            # 0 (or one at least the split's size) takes every example instead.
            if 0 < self.pool_size < len(pool):
                chosen = _mmr(vectors, relevance, tools, self.pool_size, self.diversity)
            else:
                chosen = list(range(len(pool)))
            config.pop("few_shot", None)
            config["few_shot_pool"] = pool_config(
                [
                    FewShot(questions[i], pool[i]["target"]["tool_calls"], _called_tools(pool[i]))
                    for i in chosen
                ],
                vectors[chosen],
                k=self.k,
                token_budget=self.token_budget,
                embedding=embedder.name,
                store_artefact=lambda data, meta: put_artefact(store, "few_shot_pool", data, meta),
            )
            sources = Counter(pool[i]["source"] for i in chosen)
            where = (
                "pinned"
                if "ref" not in config["few_shot_pool"]
                else f"in {config['few_shot_pool']['ref'][:19]}…"
            )
            changes = [
                f"per-request few-shot: each request is shown its {self.k} nearest of {len(chosen)} {where} "
                f"examples ({', '.join(f'{n} {s}' for s, n in sorted(sources.items()))}; "
                f"{len(set().union(*(tools[i] for i in chosen)))} tools) out of a pool of {len(pool)}"
            ]
        else:
            cost = [_tokens(q) + _tokens(str(r["target"])) for q, r in zip(questions, pool, strict=True)]
            chosen = _mmr(vectors, relevance, tools, self.k, self.diversity, cost, self.token_budget)
            config.pop("few_shot_pool", None)
            config["few_shot"] = [
                {
                    "question": questions[i],
                    "calls": pool[i]["target"]["tool_calls"],
                    "tools": _called_tools(pool[i]),
                }
                for i in chosen
            ]
            changes = []
            for n, i in enumerate(chosen):
                names = sorted(tools[i])
                changes.append(
                    f"few-shot example {n + 1}: {questions[i][:80]!r} ({pool[i]['source']}, tools {names})"
                )
        return make_candidate(
            store,
            workload,
            config,
            strategy=self.name,
            dataset_id=dataset_id,
            current=current,
            changes=changes,
        )

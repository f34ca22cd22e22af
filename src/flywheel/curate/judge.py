"""An optional LLM judge of example quality, through any OpenAI-compatible
endpoint. Its prompt is versioned (``PROMPT_VERSION``); its scores are cached
in the store by (example, prompt version, model), so a re-run costs nothing.

Configure it in the rules file::

    judge: {model: "openai:gpt-4o-mini@https://api.openai.com/v1", disagreement: 0.5}

The judge's scores join the deterministic ones (``method: "llm judge ..."``);
when it disagrees with them by more than ``disagreement``, the example goes to
human review instead of straight into the dataset.
"""

from __future__ import annotations

import json
import logging
import re

from sqlalchemy import select

from flywheel.curate.examples import Example
from flywheel.models.base import ChatModel, ChatRequest
from flywheel.records import utcnow
from flywheel.store import Store
from flywheel.store import tables as t

__all__ = ["PROMPT", "PROMPT_VERSION", "Judge"]

log = logging.getLogger(__name__)

PROMPT_VERSION = "judge-v1"
PROMPT = """You grade one training example for an AI agent that calls tools.
Request: {question}
Tools offered: {tools}
Answer to grade: {target}

Score the answer from 0 to 1 on each dimension and reply with JSON only:
{{"accuracy": x, "completeness": x, "relevance": x}}
accuracy: the right tool(s) with the right argument values for the request.
completeness: nothing the request asked for is missing.
relevance: the answer addresses this request and nothing else."""

_JSON = re.compile(r"\{.*\}", re.S)


class Judge:
    def __init__(self, model: ChatModel, store: Store) -> None:
        self.model = model
        self.store = store

    def _cached(self, example_ids: list[str]) -> dict[str, dict[str, float]]:
        c = t.judgements.c
        out: dict[str, dict[str, float]] = {}
        with self.store.engine.connect() as conn:
            for i in range(0, len(example_ids), 500):
                rows = conn.execute(
                    select(c.example_id, c.scores).where(
                        c.example_id.in_(example_ids[i : i + 500]),
                        c.prompt_version == PROMPT_VERSION,
                        c.model == self.model.name,
                    )
                )
                out.update({example_id: scores for example_id, scores in rows})
        return out

    def scores(self, examples: list[Example]) -> dict[str, dict[str, float]]:
        """Scores per example id (from the cache, or asked for and cached)."""
        known = self._cached([e.id for e in examples])
        fresh = []
        for example in examples:
            if example.id in known:
                continue
            names = [(tool.get("function") or tool).get("name") for tool in example.tools or []]
            prompt = PROMPT.format(
                question=example.question,
                tools=", ".join(filter(None, names)),
                target=json.dumps(example.target),
            )
            result = self.model.complete(
                ChatRequest(messages=[{"role": "user", "content": prompt}], tools=[], max_tokens=80)
            )
            match = _JSON.search(result.text or "")
            try:
                parsed = json.loads(match.group()) if match else {}
                scores = {
                    k: min(1.0, max(0.0, float(parsed[k])))
                    for k in ("accuracy", "completeness", "relevance")
                    if k in parsed
                }
            except (ValueError, TypeError):
                scores = {}
            if not scores:
                log.warning(
                    "judge %s gave no usable scores for %s: %r",
                    self.model.name,
                    example.id,
                    (result.text or result.error or "")[:120],
                )
                continue
            known[example.id] = scores
            fresh.append(
                {
                    "example_id": example.id,
                    "prompt_version": PROMPT_VERSION,
                    "model": self.model.name,
                    "scores": scores,
                    "created_at": utcnow(),
                }
            )
        if fresh:
            with self.store.engine.begin() as conn:
                conn.execute(t.judgements.insert(), fresh)
        return known

    def apply(self, examples: list[Example], disagreement: float) -> list[tuple[Example, str]]:
        """Add the judge's scores to each example's quality; return those it disputes."""
        disputed = []
        scores = self.scores(examples)
        for example in examples:
            judged = scores.get(example.id)
            if not judged:
                continue
            for dimension, score in judged.items():
                ours = example.quality.get(dimension, {}).get("score")
                example.quality[f"{dimension}_judge"] = {
                    "score": score,
                    "method": f"llm judge {self.model.name} ({PROMPT_VERSION})",
                }
                if ours is not None and abs(ours - score) > disagreement:
                    disputed.append((example, f"judge disagrees on {dimension}: {score:.2f} vs {ours:.2f}"))
                    break
        return disputed

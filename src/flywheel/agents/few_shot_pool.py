"""Per-request few-shot examples: the pool a version pins, and the choice for
one request.

A small pool (up to ``INLINE_LIMIT`` examples) is pinned inline in the
version's config: the examples and their float16 embeddings. A larger one
(up to a whole few-shot split, a million examples and more) is pinned as an
artefact (``sha256:...``): the examples, with each distinct tool declaration
stored once, and a ``VectorIndex`` (an HNSW graph from ``APPROXIMATE_FROM``
examples on), so a request's nearest neighbours are found in well under a
millisecond however large the pool.

For each request: embed the question, take the ``CANDIDATES_PER_SHOT * k``
nearest examples, and choose ``k`` of them by maximal marginal relevance
(similar to the request, not to each other) within a token budget.
"""

from __future__ import annotations

import base64
import io
import zipfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import orjson

from flywheel.agents.vectors import VectorIndex
from flywheel.errors import ConfigError
from flywheel.models.base import FewShot

__all__ = ["INLINE_LIMIT", "FewShotPool", "decode_pool", "encode_pool", "pool_config"]

INLINE_LIMIT = 256  # examples; a larger pool is an artefact
CANDIDATES_PER_SHOT = 8
_FORMAT = b"flywheel-few-shot/1"


def _cost(shot: FewShot) -> int:
    """Tokens, roughly (4 characters each)."""
    return (len(shot.question) + len(str(shot.calls)) + len(str(shot.tools))) // 4


@dataclass
class FewShotPool:
    examples: list[FewShot]
    index: VectorIndex  # row i is the embedding of examples[i]
    k: int = 3
    token_budget: int = 600
    diversity: float = 0.7  # MMR: 1 = similarity only
    embedding: str | None = None  # the embedding model the pool was made with

    def __len__(self) -> int:
        return len(self.examples)

    def select(self, question: str) -> list[FewShot]:
        from flywheel.models.embedding import Embedder

        if not self.examples or self.k <= 0:
            return []
        embedder = Embedder()
        if self.embedding is not None and embedder.name != self.embedding:
            raise ConfigError(
                f"few-shot pool embedded with {self.embedding}, the runtime has {embedder.name}"
            )
        return self.nearest(np.asarray(embedder.embed([question])[0], dtype=np.float32))

    def nearest(self, query: Any) -> list[FewShot]:
        """The examples shown for a request whose embedding is ``query``."""
        rows, similarity = self.index.search(query, max(CANDIDATES_PER_SHOT * self.k, 32))
        if not len(rows):
            return []
        vectors = self.index.rows(rows)
        chosen: list[int] = []
        redundancy = np.zeros(len(rows), dtype=np.float32)
        budget = self.token_budget
        while len(chosen) < min(self.k, len(rows)):
            score = self.diversity * similarity - (1 - self.diversity) * redundancy
            score[chosen] = -np.inf
            best = int(np.argmax(score))
            cost = _cost(self.examples[int(rows[best])])
            if cost > budget and chosen:
                break
            budget -= cost
            chosen.append(best)
            redundancy = np.maximum(redundancy, vectors @ vectors[best])
        return [self.examples[int(rows[i])] for i in chosen]

    @classmethod
    def from_config(
        cls, data: dict[str, Any], artefacts: Callable[[str], bytes] | None = None
    ) -> FewShotPool:
        """The pool of a version's ``few_shot_pool`` (inline, or an artefact read by ``artefacts``)."""
        k, budget = int(data.get("k", 3)), int(data.get("token_budget", 600))
        embedding = data.get("embedding")
        if "ref" in data:
            if artefacts is None:
                raise ConfigError(
                    f"the version pins few-shot pool {data['ref']}, and there is nothing to read it from",
                    hint="build the agent config with artefacts= (the store or the SDK client)",
                )
            examples, index = decode_pool(artefacts(data["ref"]))
            return cls(examples, index, k, budget, embedding=embedding)
        examples = [FewShot(e["question"], e["calls"], e.get("tools") or []) for e in data["examples"]]
        raw = base64.b64decode(data["vectors"])
        vectors = np.frombuffer(raw, dtype=np.float16).astype(np.float32).reshape(len(examples), -1)
        return cls(examples, VectorIndex.build(vectors, approximate=False), k, budget, embedding=embedding)


def encode_pool(shots: Sequence[FewShot], vectors: Any, *, approximate: bool | None = None) -> bytes:
    """The artefact of a large pool: the examples (each distinct tool declaration
    once) and their vector index, in a zip."""
    declarations: dict[bytes, int] = {}
    rows = []
    for shot in shots:
        refs = []
        for tool in shot.tools:
            key = orjson.dumps(tool, option=orjson.OPT_SORT_KEYS)
            refs.append(declarations.setdefault(key, len(declarations)))
        rows.append([shot.question, shot.calls, refs])
    document = {"tools": [orjson.loads(key) for key in declarations], "examples": rows}
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED, compresslevel=1) as archive:
        archive.writestr("format", _FORMAT)
        archive.writestr("examples.json", orjson.dumps(document))
        archive.writestr(
            "index", VectorIndex.build(vectors, approximate=approximate).to_bytes(), zipfile.ZIP_STORED
        )
    return buffer.getvalue()


def decode_pool(data: bytes) -> tuple[list[FewShot], VectorIndex]:
    try:
        with zipfile.ZipFile(io.BytesIO(data)) as archive:
            if archive.read("format") != _FORMAT:
                raise ConfigError("not a flywheel few-shot pool (unknown format)")
            document = orjson.loads(archive.read("examples.json"))
            index = VectorIndex.from_bytes(archive.read("index"))
    except (zipfile.BadZipFile, KeyError, orjson.JSONDecodeError) as exc:
        raise ConfigError(f"a few-shot pool that cannot be read: {exc}") from exc
    tools = document["tools"]
    examples = [
        FewShot(question, calls, [tools[i] for i in refs]) for question, calls, refs in document["examples"]
    ]
    if len(index) != len(examples):
        raise ConfigError(f"a few-shot pool of {len(examples)} examples whose index holds {len(index)}")
    return examples, index


def pool_config(
    shots: Sequence[FewShot],
    vectors: Any,
    *,
    k: int,
    token_budget: int,
    embedding: str,
    store_artefact: Callable[[bytes, dict[str, Any]], str],
) -> dict[str, Any]:
    """A version's ``few_shot_pool``: inline when small, else an artefact
    (``store_artefact(bytes, meta) -> ref``)."""
    config: dict[str, Any] = {
        "k": k,
        "token_budget": token_budget,
        "embedding": embedding,
        "size": len(shots),
    }
    if len(shots) <= INLINE_LIMIT:
        packed = np.ascontiguousarray(np.asarray(vectors, dtype=np.float16))
        config["examples"] = [{"question": s.question, "calls": s.calls, "tools": s.tools} for s in shots]
        config["vectors"] = base64.b64encode(packed.tobytes()).decode()
        return config
    data = encode_pool(shots, vectors)
    config["ref"] = store_artefact(data, {"examples": len(shots), "embedding": embedding})
    return config

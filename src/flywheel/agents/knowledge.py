"""The agent's retrieval step over the knowledge-index snapshot its version pins.

A snapshot is an artefact (``sha256:...``) holding the items (id, text,
source) and their sentence embeddings (float16). The agent embeds each
request, takes the ``k`` most similar items above ``min_score`` and puts them
in its system prompt as facts; the step is logged as a retrieval with the
documents and their scores, so reviewers can judge their relevance.
"""

from __future__ import annotations

import base64
import json
import threading
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from flywheel.errors import ConfigError

__all__ = ["KnowledgeIndex", "Retrieved", "decode_snapshot", "encode_snapshot"]


@dataclass(frozen=True)
class Retrieved:
    id: str
    text: str
    score: float
    source: str


def encode_snapshot(items: list[dict[str, Any]], vectors: Any, embedding: str) -> bytes:
    """The bytes of a snapshot: items (id, text, source) and float16 unit vectors."""
    import numpy as np

    packed = np.ascontiguousarray(np.asarray(vectors, dtype=np.float16))
    document = {
        "format": "flywheel-knowledge/1",
        "embedding": embedding,
        "dimensions": int(packed.shape[1]) if len(items) else 0,
        "items": items,
        "vectors": base64.b64encode(packed.tobytes()).decode(),
    }
    return json.dumps(document, sort_keys=True, separators=(",", ":")).encode()


def decode_snapshot(data: bytes) -> tuple[dict[str, Any], Any]:
    import numpy as np

    document = json.loads(data)
    if document.get("format") != "flywheel-knowledge/1":
        raise ConfigError(f"unknown knowledge snapshot format {document.get('format')!r}")
    items = document["items"]
    raw = base64.b64decode(document["vectors"])
    vectors = np.frombuffer(raw, dtype=np.float16).astype(np.float32).reshape(len(items), -1)
    vectors /= np.maximum(np.linalg.norm(vectors, axis=1, keepdims=True), 1e-9)
    return document, vectors


_indexes: dict[str, KnowledgeIndex] = {}
_lock = threading.Lock()


class KnowledgeIndex:
    def __init__(self, data: bytes, k: int = 3, min_score: float = 0.35) -> None:
        document, self.vectors = decode_snapshot(data)
        self.items: list[dict[str, Any]] = document["items"]
        self.embedding: str = document["embedding"]
        self.k = k
        self.min_score = min_score
        self._recent: OrderedDict[tuple[str, frozenset[str]], list[Retrieved]] = OrderedDict()
        self._recent_lock = threading.Lock()

    @classmethod
    def pinned(cls, spec: dict[str, Any], fetch: Callable[[str], bytes] | None) -> KnowledgeIndex:
        """The index of a version's ``knowledge_snapshot`` (loaded once per process)."""
        ref = spec["ref"]
        with _lock:
            if ref not in _indexes:
                if fetch is None:
                    raise ConfigError(
                        f"the version pins knowledge snapshot {ref}, and there is nothing to read it from",
                        hint="build the agent config with artefacts= (the store or the SDK client)",
                    )
                _indexes[ref] = cls(fetch(ref))
        index = _indexes[ref]
        return cls.__new__(cls)._view(index, int(spec.get("k", 3)), float(spec.get("min_score", 0.35)))

    def _view(self, other: KnowledgeIndex, k: int, min_score: float) -> KnowledgeIndex:
        self.items, self.vectors, self.embedding = other.items, other.vectors, other.embedding
        self.k, self.min_score = k, min_score
        self._recent = OrderedDict()
        self._recent_lock = threading.Lock()
        return self

    def search(self, query: str, exclude: frozenset[str] = frozenset()) -> list[Retrieved]:
        """The ``k`` items most similar to ``query`` scoring at least ``min_score``,
        leaving out items whose source is in ``exclude`` (training prompts leave
        out the example's own correction: served, it cannot have seen it). A
        request's prompt and its logged retrieval ask twice: the last few
        answers are remembered."""
        import numpy as np

        from flywheel.models.embedding import Embedder

        if not self.items or not query.strip():
            return []
        key = (query, exclude)
        with self._recent_lock:
            if key in self._recent:
                return self._recent[key]
        embedder = Embedder()
        if embedder.name != self.embedding:
            raise ConfigError(f"snapshot embedded with {self.embedding}, the runtime has {embedder.name}")
        scores = self.vectors @ np.asarray(embedder.embed([query])[0], dtype=np.float32)
        found: list[Retrieved] = []
        for i in np.argsort(-scores):
            if len(found) == self.k or scores[i] < self.min_score:
                break
            item = self.items[i]
            if item["source"] not in exclude:
                found.append(Retrieved(item["id"], item["text"], float(scores[i]), item["source"]))
        with self._recent_lock:
            self._recent[key] = found
            if len(self._recent) > 64:
                self._recent.popitem(last=False)
        return found

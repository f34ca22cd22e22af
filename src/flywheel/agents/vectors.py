"""Nearest neighbours over unit vectors (cosine similarity).

Small sets are searched exactly (one matrix product in numpy). From
``APPROXIMATE_FROM`` vectors on, an HNSW graph (``usearch``, in the ``embed``
extra) answers a query in well under a millisecond, where the exact product
grows with the pool (2.9 ms at 30,000 vectors of 384 dimensions here: about
0.1 s at a million). The graph
keeps its vectors in float16 (a million MiniLM vectors and their links in
about 0.9 GB, which still fits one store blob); beyond ``FLOAT16_BYTES`` of
vectors, in int8 (half that again, at the price of recall: 0.83 instead of
0.999 at 10 on clustered data, see bench/ann.py).

An index serialises to bytes (``to_bytes``/``from_bytes``): the graph, built
once when a version is made, travels in the version's artefact instead of
being rebuilt by every process that serves it.
"""

from __future__ import annotations

import io
import zipfile
from typing import Any

import numpy as np

from flywheel.errors import ConfigError

__all__ = ["APPROXIMATE_FROM", "FLOAT16_BYTES", "VectorIndex"]

APPROXIMATE_FROM = 20_000  # below this, exact search is as fast as a graph walk
FLOAT16_BYTES = 800_000_000  # graphs whose float16 vectors would be larger store int8
_FORMAT = b"flywheel-vectors/1"


def _unit(vectors: Any) -> np.ndarray:
    matrix = np.ascontiguousarray(np.asarray(vectors, dtype=np.float32))
    if matrix.ndim != 2:
        raise ValueError(f"vectors must be a 2-d array, not {matrix.ndim}-d")
    return matrix / np.maximum(np.linalg.norm(matrix, axis=1, keepdims=True), 1e-9)


class VectorIndex:
    """``search(query, k)``: the ``k`` rows most similar to ``query``, best first."""

    def __init__(self, vectors: np.ndarray | None, graph: Any = None) -> None:
        self.vectors = vectors  # exact search: float32 unit rows (kept as float16 in bytes)
        self.graph = graph  # approximate search: a usearch Index holding the vectors

    def __len__(self) -> int:
        if self.graph is not None:
            return len(self.graph)
        return 0 if self.vectors is None else len(self.vectors)

    @property
    def approximate(self) -> bool:
        return self.graph is not None

    @classmethod
    def build(cls, vectors: Any, *, approximate: bool | None = None, threads: int = 0) -> VectorIndex:
        """An index of ``vectors`` (normalised here). ``approximate``: None
        decides by size (``APPROXIMATE_FROM``); True needs ``usearch``."""
        matrix = _unit(vectors) if len(vectors) else np.zeros((0, 0), np.float32)
        if approximate is None:
            approximate = len(matrix) >= APPROXIMATE_FROM
        if not (approximate and len(matrix)):
            return cls(matrix)
        graph = _new_graph(matrix.shape[1], "f16" if matrix.size * 2 <= FLOAT16_BYTES else "i8")
        graph.add(np.arange(len(matrix), dtype=np.uint64), matrix, threads=threads)
        return cls(None, graph)

    def search(self, query: Any, k: int) -> tuple[np.ndarray, np.ndarray]:
        """(row indices, cosine scores) of the ``k`` nearest rows, best first."""
        if not len(self) or k <= 0:
            return np.zeros(0, np.int64), np.zeros(0, np.float32)
        q = np.asarray(query, dtype=np.float32).reshape(-1)
        q = q / max(float(np.linalg.norm(q)), 1e-9)
        if self.graph is not None:
            found = self.graph.search(q, min(k, len(self)), threads=1)
            rows = np.asarray(found.keys, dtype=np.int64)
            return rows, (1.0 - np.asarray(found.distances, dtype=np.float32))
        assert self.vectors is not None
        scores = self.vectors @ q
        rows = np.argpartition(-scores, k - 1)[:k] if len(scores) > k else np.arange(len(scores))
        order = np.argsort(-scores[rows], kind="stable")
        return rows[order], scores[rows][order]

    def rows(self, rows: Any) -> np.ndarray:
        """The unit vectors (float32) of ``rows``."""
        rows = np.asarray(rows, dtype=np.int64)
        if self.graph is None:
            assert self.vectors is not None
            return self.vectors[rows]
        return _unit(np.asarray(self.graph.get(rows.astype(np.uint64)), dtype=np.float32))

    def to_bytes(self) -> bytes:
        """The vectors (float16), or the graph, in a zip."""
        buffer = io.BytesIO()
        with zipfile.ZipFile(buffer, "w", zipfile.ZIP_STORED) as archive:
            archive.writestr("format", _FORMAT)
            if self.graph is not None:
                archive.writestr("graph.usearch", bytes(self.graph.save()))
            else:
                saved = io.BytesIO()
                np.save(saved, np.asarray(self.vectors, dtype=np.float16), allow_pickle=False)
                archive.writestr("vectors.npy", saved.getvalue())
        return buffer.getvalue()

    @classmethod
    def from_bytes(cls, data: bytes) -> VectorIndex:
        try:
            with zipfile.ZipFile(io.BytesIO(data)) as archive:
                if archive.read("format") != _FORMAT:
                    raise ConfigError("not a flywheel vector index (unknown format)")
                if "graph.usearch" not in archive.namelist():
                    vectors = np.load(io.BytesIO(archive.read("vectors.npy")), allow_pickle=False)
                    return cls(_unit(vectors) if len(vectors) else np.asarray(vectors, np.float32))
                from usearch.index import Index

                graph = Index.restore(bytearray(archive.read("graph.usearch")))
        except (zipfile.BadZipFile, KeyError, ValueError, RuntimeError) as exc:
            raise ConfigError(f"a vector index that cannot be read: {exc}") from exc
        if graph is None:
            raise ConfigError("a vector index whose graph cannot be read")
        return cls(None, graph)


def _new_graph(dimensions: int, dtype: str) -> Any:
    try:
        from usearch.index import Index
    except ImportError as exc:  # pragma: no cover - the embed extra brings it
        raise ConfigError(
            "approximate nearest-neighbour search needs usearch", hint="pip install 'data-flywheel[embed]'"
        ) from exc
    return Index(
        ndim=dimensions, metric="cos", dtype=dtype, connectivity=16, expansion_add=128, expansion_search=128
    )

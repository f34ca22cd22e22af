"""Nearest-neighbour search (exact and HNSW) and the few-shot pool pinned as an artefact."""

from __future__ import annotations

import numpy as np
import pytest

from flywheel.agents.few_shot_pool import INLINE_LIMIT, FewShotPool, decode_pool, encode_pool, pool_config
from flywheel.agents.vectors import VectorIndex
from flywheel.errors import ConfigError
from flywheel.models.base import FewShot


def _clustered(n: int, d: int = 64, clusters: int = 50, seed: int = 0) -> np.ndarray:
    """Vectors around a few centres, like sentence embeddings of related requests."""
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(clusters, d))
    vectors = centres[rng.integers(0, clusters, n)] + 0.45 * rng.normal(size=(n, d))
    return (vectors / np.linalg.norm(vectors, axis=1, keepdims=True)).astype(np.float32)


def test_exact_search_returns_the_true_nearest_rows_best_first():
    vectors = _clustered(500)
    index = VectorIndex.build(vectors)
    assert not index.approximate
    query = vectors[17] + 0.01
    rows, scores = index.search(query, 5)
    truth = np.argsort(-(vectors @ (query / np.linalg.norm(query))))[:5]
    assert rows.tolist() == truth.tolist()
    assert rows[0] == 17 and np.all(np.diff(scores) <= 1e-6)
    assert index.search(query, 0)[0].size == 0
    assert VectorIndex.build(np.zeros((0, 8), np.float32)).search(query, 3)[0].size == 0


def test_approximate_search_finds_nearly_all_true_neighbours_and_survives_bytes():
    vectors = _clustered(6000, seed=1)
    index = VectorIndex.build(vectors, approximate=True)
    assert index.approximate and len(index) == 6000
    rng = np.random.default_rng(2)  # requests like, but not equal to, pooled ones
    queries = vectors[rng.integers(0, 6000, 100)] + 0.3 * rng.normal(size=(100, 64)).astype(np.float32) / 8
    queries /= np.linalg.norm(queries, axis=1, keepdims=True)
    exact = VectorIndex.build(vectors, approximate=False)
    recall = np.mean([len(set(index.search(q, 10)[0]) & set(exact.search(q, 10)[0])) / 10 for q in queries])
    assert recall >= 0.97
    restored = VectorIndex.from_bytes(index.to_bytes())
    assert restored.approximate
    rows, scores = restored.search(queries[0], 10)
    assert rows.tolist() == index.search(queries[0], 10)[0].tolist()
    # the scores are cosines (of the float16-stored vectors), close to the exact ones
    assert np.allclose(scores, exact.vectors[rows] @ queries[0], atol=0.01)  # type: ignore[index]
    assert np.allclose(np.linalg.norm(restored.rows(rows[:3]), axis=1), 1.0, atol=1e-3)


def test_unreadable_index_bytes_are_a_clear_error():
    with pytest.raises(ConfigError, match="cannot be read"):
        VectorIndex.from_bytes(b"not a zip")


def _shots(n: int) -> list[FewShot]:
    tools = [
        {"type": "function", "function": {"name": f"tool_{i}", "parameters": {"type": "object"}}}
        for i in range(5)
    ]
    return [
        FewShot(f"question {i}", [{"name": f"tool_{i % 5}", "arguments": {"n": i}}], [tools[i % 5]])
        for i in range(n)
    ]


def test_a_large_pool_is_an_artefact_and_requests_get_their_nearest_examples():
    shots, vectors = _shots(INLINE_LIMIT + 200), _clustered(INLINE_LIMIT + 200, seed=3)
    kept: dict[str, bytes] = {}

    def store_artefact(data: bytes, meta: dict) -> str:
        ref = "sha256:" + "0" * 63 + str(len(kept))
        kept[ref] = data
        return ref

    config = pool_config(shots, vectors, k=3, token_budget=600, embedding="m", store_artefact=store_artefact)
    assert "examples" not in config and config["ref"] in kept and config["size"] == len(shots)
    pool = FewShotPool.from_config(config, kept.__getitem__)
    assert len(pool) == len(shots)
    chosen = pool.nearest(vectors[42])
    assert chosen[0] == shots[42] and len(chosen) == 3
    assert chosen[0].tools == shots[42].tools  # declarations stored once, given back per example
    with pytest.raises(ConfigError, match="nothing to read it from"):
        FewShotPool.from_config(config, None)


def test_a_small_pool_stays_inline_and_an_approximate_pool_round_trips():
    shots, vectors = _shots(10), _clustered(10, seed=4)
    config = pool_config(shots, vectors, k=2, token_budget=600, embedding="m", store_artefact=None)  # type: ignore[arg-type]
    assert len(config["examples"]) == 10 and "ref" not in config
    assert FewShotPool.from_config(config).nearest(vectors[3])[0] == shots[3]
    examples, index = decode_pool(encode_pool(_shots(300), _clustered(300, seed=5), approximate=True))
    assert index.approximate and len(examples) == 300
    with pytest.raises(ConfigError, match="cannot be read"):
        decode_pool(b"junk")

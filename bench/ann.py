"""Per-request few-shot search at scale: a pool of N examples (default 1M).

    python bench/ann.py [--examples 1000000] [--queries 500]

Builds a few-shot pool of N synthetic examples whose embeddings (384
dimensions, like all-MiniLM-L6-v2's) lie around many centres, as requests of
a real workload do, and pins it the way a version does (``pool_config``:
the examples, each distinct tool once, and an HNSW index, in one artefact).
Then, in the same run, for the same queries (pooled requests, perturbed):

* the baseline: exact search, one matrix product over all N vectors (numpy);
* ``VectorIndex.search``: the HNSW graph (usearch, float16 vectors);
* ``FewShotPool.nearest``: what the agent does per request (the graph's
  candidates, then MMR within the token budget).

Reports build seconds, artefact MB, per-query p50/p95 ms, recall@10 against
the exact search and the speed-up; JSON to bench/results/ann.json. The
embedding of the request itself (a few ms of MiniLM) is not included.
"""

from __future__ import annotations

import argparse
import json
import resource
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

from flywheel.agents.few_shot_pool import FewShotPool, pool_config  # noqa: E402
from flywheel.models.base import FewShot  # noqa: E402


def embeddings(n: int, dimensions: int, centres: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    middle = rng.normal(size=(centres, dimensions)).astype(np.float32)
    out = np.empty((n, dimensions), dtype=np.float32)
    for start in range(0, n, 100_000):  # in slices: a million rows of noise at once is 1.5 GB more
        size = min(100_000, n - start)
        part = middle[rng.integers(0, centres, size)] + 0.5 * rng.normal(size=(size, dimensions)).astype(
            np.float32
        )
        out[start : start + size] = part / np.linalg.norm(part, axis=1, keepdims=True)
    return out


def percentiles(samples: list[float]) -> tuple[float, float]:
    ms = np.asarray(samples) * 1000
    return float(np.percentile(ms, 50)), float(np.percentile(ms, 95))


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--examples", type=int, default=1_000_000)
    parser.add_argument("--queries", type=int, default=500)
    parser.add_argument("--dimensions", type=int, default=384)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "ann.json")
    args = parser.parse_args()
    n = args.examples

    started = time.perf_counter()
    vectors = embeddings(n, args.dimensions, max(100, n // 200), args.seed)
    tools = [
        {"type": "function", "function": {"name": f"tool_{i}", "parameters": {"type": "object"}}}
        for i in range(200)
    ]
    shots = [
        FewShot(
            f"request {i} about topic {i % 997}",
            [{"name": f"tool_{i % 200}", "arguments": {"n": i}}],
            [tools[i % 200]],
        )
        for i in range(n)
    ]
    print(f"made {n:,} examples in {time.perf_counter() - started:.1f} s", flush=True)

    kept: dict[str, bytes] = {}

    def store_artefact(data: bytes, meta: dict) -> str:
        kept["ref"] = data
        return "ref"

    started = time.perf_counter()
    config = pool_config(
        shots, vectors, k=3, token_budget=600, embedding="bench", store_artefact=store_artefact
    )
    build_seconds = time.perf_counter() - started
    artefact_mb = len(kept["ref"]) / 1e6
    print(f"pinned the pool in {build_seconds:.1f} s: {artefact_mb:.0f} MB artefact", flush=True)
    started = time.perf_counter()
    pool = FewShotPool.from_config(config, kept.__getitem__)
    load_seconds = time.perf_counter() - started
    kept.clear()  # the pool holds what it needs

    rng = np.random.default_rng(args.seed + 1)
    picks = rng.integers(0, n, args.queries)
    noise = rng.normal(size=(args.queries, args.dimensions)).astype(np.float32)
    queries = vectors[picks] + 0.3 * noise / np.sqrt(args.dimensions)  # a pooled request, reworded
    queries = (queries / np.linalg.norm(queries, axis=1, keepdims=True)).astype(np.float32)

    exact_times, ann_times, pool_times, recalls = [], [], [], []
    for query in queries:
        t0 = time.perf_counter()
        scores = vectors @ query
        truth = np.argpartition(-scores, 10)[:10]
        t1 = time.perf_counter()
        found, _ = pool.index.search(query, 10)
        t2 = time.perf_counter()
        pool.nearest(query)
        t3 = time.perf_counter()
        exact_times.append(t1 - t0)
        ann_times.append(t2 - t1)
        pool_times.append(t3 - t2)
        recalls.append(len(set(truth.tolist()) & set(found.tolist())) / 10)

    rows = [
        ("exact (numpy, baseline)", *percentiles(exact_times)),
        ("VectorIndex.search (HNSW)", *percentiles(ann_times)),
        ("FewShotPool.nearest (+MMR)", *percentiles(pool_times)),
    ]
    print(f"\n{n:,} examples, {args.dimensions} dimensions, {args.queries} queries")
    print(f"{'search':30} {'p50 ms':>8} {'p95 ms':>8} {'speed-up p50':>13}")
    for name, p50, p95 in rows:
        print(f"{name:30} {p50:8.2f} {p95:8.2f} {rows[0][1] / p50:13.1f}")
    recall = float(np.mean(recalls))
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(
        f"recall@10 of the graph: {recall:.3f}; pool pinned in {build_seconds:.1f} s ({artefact_mb:.0f} MB), "
        f"loaded in {load_seconds:.1f} s; peak RSS {rss:.0f} MB"
    )
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(
        json.dumps(
            {
                "examples": n,
                "dimensions": args.dimensions,
                "queries": args.queries,
                "build_seconds": round(build_seconds, 2),
                "load_seconds": round(load_seconds, 2),
                "artefact_mb": round(artefact_mb, 1),
                "recall_at_10": round(recall, 4),
                "peak_rss_mb": round(rss),
                "search_ms": {name: {"p50": round(p50, 3), "p95": round(p95, 3)} for name, p50, p95 in rows},
            },
            indent=2,
        )
    )
    print(f"JSON in {args.out}")


if __name__ == "__main__":
    main()

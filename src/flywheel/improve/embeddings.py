"""Example embeddings, computed once per (example, model) and kept in the store."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
from sqlalchemy import select

from flywheel.records import utcnow
from flywheel.store import Store
from flywheel.store import tables as t

__all__ = ["example_vectors"]


def example_vectors(store: Store, ids: Sequence[str], texts: Sequence[str], embedder: Any) -> np.ndarray:
    """Unit vectors (rows in the order of ``ids``); only the missing ones are computed."""
    c = t.example_embeddings.c
    known: dict[str, np.ndarray] = {}
    with store.engine.connect() as conn:
        for start in range(0, len(ids), 5000):
            chunk = list(ids[start : start + 5000])
            rows = conn.execute(
                select(c.example_id, c.vector).where(c.model == embedder.name, c.example_id.in_(chunk))
            )
            known.update((i, np.frombuffer(v, dtype=np.float32)) for i, v in rows)
    missing = [n for n, i in enumerate(ids) if i not in known]
    for start in range(0, len(missing), 256):
        batch = missing[start : start + 256]
        vectors = np.asarray(embedder.embed([texts[n] for n in batch]), dtype=np.float32)
        now = utcnow()
        with store._writing() as conn:
            conn.execute(
                t.example_embeddings.insert(),
                [
                    {"example_id": ids[n], "model": embedder.name, "vector": v.tobytes(), "created_at": now}
                    for n, v in zip(batch, vectors, strict=True)
                    if ids[n] not in known
                ],
            )
        for n, v in zip(batch, vectors, strict=True):
            known[ids[n]] = v
    if not ids:
        return np.zeros((0, 384), dtype=np.float32)
    return np.stack([known[i] for i in ids])

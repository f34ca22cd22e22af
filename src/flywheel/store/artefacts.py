"""Content-addressed artefacts: the binary parts a version pins (LoRA adapters,
knowledge-index snapshots).

An artefact is named by the SHA-256 of its bytes (``sha256:HEX``) and kept in
the store, so any machine that reads the store can serve any version; a
version's config holds only the reference. Writing the same bytes twice is a
no-op. Runtimes that need a file (llama.cpp loads adapters from a path) get a
local copy in a cache folder, written atomically and checked against its hash.
"""

from __future__ import annotations

import hashlib
import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError

from flywheel.errors import InvalidInput, NotFound
from flywheel.records import utcnow
from flywheel.store import tables as t
from flywheel.store.store import Store

__all__ = ["artefact_path", "get_artefact", "is_ref", "put_artefact", "reader"]

PREFIX = "sha256:"


def is_ref(value: Any) -> bool:
    return isinstance(value, str) and value.startswith(PREFIX) and len(value) == len(PREFIX) + 64


def _digest(ref: str) -> str:
    if not is_ref(ref):
        raise InvalidInput(f"{ref!r} is not an artefact reference", hint="expected sha256: and 64 hex digits")
    return ref.removeprefix(PREFIX)


def put_artefact(store: Store, kind: str, data: bytes, meta: dict[str, Any] | None = None) -> str:
    """Keep ``data`` in the store (once) and return its reference."""
    digest = hashlib.sha256(data).hexdigest()
    row = {
        "sha256": digest,
        "kind": kind,
        "size": len(data),
        "meta": meta or {},
        "data": data,
        "created_at": utcnow(),
    }
    with store.engine.connect() as conn:
        exists = conn.execute(select(t.artefacts.c.sha256).where(t.artefacts.c.sha256 == digest)).first()
    if exists is None:
        try:
            with store._writing() as conn:
                conn.execute(t.artefacts.insert(), row)
        except IntegrityError:
            pass  # written by someone else meanwhile: the same bytes
    return PREFIX + digest


def get_artefact(store: Store, ref: str) -> tuple[dict[str, Any], bytes]:
    """(kind and meta, bytes) of an artefact; the bytes are checked against the name."""
    digest = _digest(ref)
    c = t.artefacts.c
    with store.engine.connect() as conn:
        row = conn.execute(select(c.kind, c.meta, c.data).where(c.sha256 == digest)).first()
    if row is None:
        raise NotFound(
            f"artefact {ref} is not in the store", hint="was the version built against another store?"
        )
    data = bytes(row.data)
    if hashlib.sha256(data).hexdigest() != digest:
        raise InvalidInput(f"artefact {ref} is corrupt: its bytes do not match its hash")
    return {"kind": row.kind, **(row.meta or {})}, data


def artefact_path(store: Store, ref: str, cache_dir: Path, suffix: str = "") -> Path:
    """A local file holding the artefact (written once into ``cache_dir``)."""
    digest = _digest(ref)
    path = cache_dir / f"{digest}{suffix}"
    if path.exists() and path.stat().st_size > 0:
        return path
    _, data = get_artefact(store, ref)
    cache_dir.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=cache_dir, prefix=".part-")
    try:
        with os.fdopen(fd, "wb") as out:
            out.write(data)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def reader(store: Store) -> Callable[[str], bytes]:
    """A function reading an artefact's bytes (what an agent config needs to load)."""
    return lambda ref: get_artefact(store, ref)[1]

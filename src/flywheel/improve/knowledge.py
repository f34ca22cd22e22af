"""Knowledge strategy: what the agent should know, retrieved for each request.

Knowledge items come from three places, each item keeping its source:

* human corrections in the dataset's train and few-shot splits (never its
  eval split): "for a request like Q, the right answer is A";
* ``missing_knowledge`` annotations on tasks up to the dataset's cutoff
  (again none of an eval task's);
* registered data sources (a file, a folder of text files, or an http(s)
  URL when reachable), re-read on their schedule: each document is split
  into passages; a changed document's passages that are gone are flagged
  stale, new ones are added, a vanished document's passages are all stale.

Every item is validated before it is committed (non-empty, at most
``max_chars``, secrets redacted as on ingestion) and deduplicated by its
normalised text (the item id is a hash of the workload and that text).
Embeddings are computed once per item and kept with it. An item that
reviewers marked irrelevant more often than relevant
(``knowledge_relevance`` annotations) is left out of the next snapshot.

The candidate pins an index snapshot (a content-addressed artefact holding
the items and their vectors) with ``k`` and a score floor; the agent embeds
each request, retrieves from that snapshot, logs the retrieval step and
puts the retrieved items in its system prompt. ``retrieval_quality`` says how
good the retrievals were, by the reviewers' relevance annotations.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections import Counter
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
from sqlalchemy import func, select, update

from flywheel.agents.knowledge import encode_snapshot
from flywheel.errors import InvalidInput, NotFound
from flywheel.improve.few_shot import Candidate, make_candidate
from flywheel.models.base import last_user_text
from flywheel.records import AgentVersion, new_id, utcnow
from flywheel.store import Store
from flywheel.store import tables as t
from flywheel.store.artefacts import get_artefact, put_artefact
from flywheel.store.store import _aware

__all__ = [
    "KnowledgeStrategy",
    "RefreshReport",
    "gather_items",
    "list_items",
    "list_sources",
    "refresh_sources",
    "register_source",
    "retrieval_quality",
]

#: text files a folder source reads
TEXT_SUFFIXES = {".md", ".txt", ".rst", ".markdown", ".text", ".csv", ".json", ".yaml", ".yml", ".html"}
MAX_DOCUMENT_BYTES = 2_000_000


def _normal(text: str) -> str:
    return re.sub(r"\s+", " ", text).strip().lower()


def _item_id(workload: str, text: str) -> str:
    return "k-" + hashlib.sha256(f"{workload}\x00{_normal(text)}".encode()).hexdigest()[:32]


class _Validator:
    """Checks and cleans an item's text the way ingestion cleans logged text."""

    def __init__(self, max_chars: int) -> None:
        from flywheel.config import Settings
        from flywheel.ingest.redact import Redactor

        settings = Settings()
        self.redactor = Redactor(settings.redact, settings.redact_patterns, max_chars=10_000_000)
        self.max_chars = max_chars
        self.rejected: Counter[str] = Counter()

    def __call__(self, text: Any) -> str | None:
        if not isinstance(text, str):
            self.rejected["not text"] += 1
            return None
        text = text.replace("\x00", "").strip()
        if len(_normal(text)) < 3:
            self.rejected["empty"] += 1
            return None
        if len(text) > self.max_chars:
            self.rejected[f"longer than {self.max_chars} characters"] += 1
            return None
        clean, _ = self.redactor.text(text)
        return clean


# ------------------------------------------------------------------ sources


def register_source(store: Store, workload: str, uri: str, every_seconds: int = 86_400) -> dict[str, Any]:
    """Register a file, folder or http(s) URL to be read into the workload's knowledge."""
    if every_seconds < 60:
        raise InvalidInput(f"a source is re-read at most every minute, got every {every_seconds} s")
    if not re.match(r"https?://", uri):
        path = Path(uri).expanduser()
        if not path.exists():
            raise InvalidInput(
                f"knowledge source {uri} does not exist", hint="give a file, a folder or a URL"
            )
        uri = str(path.resolve())
    c = t.knowledge_sources.c
    with store.engine.connect() as conn:
        row = conn.execute(select(t.knowledge_sources).where(c.workload == workload, c.uri == uri)).first()
    if row is not None:
        with store._writing() as conn:
            conn.execute(
                update(t.knowledge_sources).where(c.id == row.id).values(every_seconds=every_seconds)
            )
        return {**row._asdict(), "every_seconds": every_seconds}
    record = {
        "id": new_id(),
        "workload": workload,
        "uri": uri,
        "every_seconds": every_seconds,
        "last_read_at": None,
        "state": {},
        "created_at": utcnow(),
    }
    with store._writing() as conn:
        conn.execute(t.knowledge_sources.insert(), record)
    return record


def list_items(store: Store, workload: str, *, stale: bool = False, limit: int = 50) -> list[dict[str, Any]]:
    """Knowledge items (fresh, or the stale ones), most recently confirmed first."""
    ki = t.knowledge_items.c
    query = (
        select(ki.id, ki.text, ki.source_kind, ki.source_ref, ki.refreshed_at, ki.stale)
        .where(ki.workload == workload, ki.stale.is_(stale))
        .order_by(ki.refreshed_at.desc())
        .limit(limit)
    )
    with store.engine.connect() as conn:
        return [dict(r) for r in conn.execute(query).mappings()]


def list_sources(store: Store, workload: str | None = None) -> list[dict[str, Any]]:
    query = select(t.knowledge_sources).order_by(t.knowledge_sources.c.created_at)
    if workload:
        query = query.where(t.knowledge_sources.c.workload == workload)
    with store.engine.connect() as conn:
        return [dict(r) for r in conn.execute(query).mappings()]


def _documents(uri: str) -> dict[str, str]:
    """{document name: text} of a source; raises OSError when it cannot be read."""
    if re.match(r"https?://", uri):
        import httpx

        try:
            response = httpx.get(uri, timeout=10.0, follow_redirects=True)
            response.raise_for_status()
        except httpx.HTTPError as exc:
            raise OSError(f"{uri}: {exc}") from exc
        return {uri: response.text[:MAX_DOCUMENT_BYTES]}
    path = Path(uri)
    files = (
        [path] if path.is_file() else sorted(p for p in path.rglob("*") if p.suffix.lower() in TEXT_SUFFIXES)
    )
    out = {}
    for file in files:
        if not file.is_file() or file.stat().st_size > MAX_DOCUMENT_BYTES:
            continue
        out[str(file.relative_to(path) if path.is_dir() else file.name)] = file.read_bytes().decode(
            "utf-8", errors="replace"
        )
    return out


def passages(text: str, max_chars: int = 800) -> list[str]:
    """A document's passages: its paragraphs (split on blank lines), a heading
    kept with the paragraph under it, a paragraph over ``max_chars`` cut at
    sentence ends."""
    out: list[str] = []
    heading = ""
    for paragraph in re.split(r"\n\s*\n", text):
        paragraph = paragraph.strip()
        if not paragraph:
            continue
        if paragraph.startswith("#") and "\n" not in paragraph:
            heading = f"{heading}\n{paragraph}".strip()
            continue
        if heading:
            paragraph, heading = f"{heading}\n{paragraph}", ""
        while len(paragraph) > max_chars:  # a wall of text: cut at a sentence end if there is one
            cut = paragraph.rfind(". ", 0, max_chars)
            cut = cut + 1 if cut > max_chars // 2 else max_chars
            out.append(paragraph[:cut].strip())
            paragraph = paragraph[cut:].strip()
        if paragraph:
            out.append(paragraph)
    if heading:
        out.append(heading)
    return out


@dataclass
class RefreshReport:
    sources: int = 0
    read: int = 0
    failed: dict[str, str] | None = None
    added: int = 0
    unchanged_documents: int = 0
    changed_documents: int = 0
    stale: int = 0

    def line(self) -> str:
        failed = f", {len(self.failed)} unreadable" if self.failed else ""
        return (
            f"{self.read} of {self.sources} sources read{failed}: {self.added} passages added, "
            f"{self.changed_documents} documents changed, {self.unchanged_documents} unchanged, "
            f"{self.stale} passages flagged stale"
        )


def refresh_sources(
    store: Store,
    workload: str,
    *,
    now: datetime | None = None,
    force: bool = False,
    max_chars: int = 2000,
) -> RefreshReport:
    """Re-read the workload's sources that are due (all with ``force``)."""
    now = now or utcnow()
    report = RefreshReport(failed={})
    validate = _Validator(max_chars)
    for source in list_sources(store, workload):
        report.sources += 1
        last = _aware(source["last_read_at"])
        if not force and last is not None and now - last < timedelta(seconds=source["every_seconds"]):
            continue
        try:
            documents = _documents(source["uri"])
        except OSError as exc:
            assert report.failed is not None
            report.failed[source["uri"]] = str(exc)
            continue  # its passages stay as they were: a source that is down has not changed
        report.read += 1
        state: dict[str, str] = dict(source["state"] or {})
        new_state: dict[str, str] = {}
        ki = t.knowledge_items.c
        with store._writing() as conn:
            for name, text in documents.items():
                digest = hashlib.sha256(text.encode()).hexdigest()
                new_state[name] = digest
                ref = f"{source['id']}:{name}"
                if state.get(name) == digest:
                    report.unchanged_documents += 1
                    conn.execute(
                        update(t.knowledge_items)
                        .where(ki.source_ref == ref, ki.stale.is_(False))
                        .values(refreshed_at=now)
                    )
                    continue
                report.changed_documents += name in state
                keep = set()
                for passage in passages(text):
                    clean = validate(passage)
                    if clean is None:
                        continue
                    item_id = _item_id(workload, clean)
                    keep.add(item_id)
                    report.added += _upsert(conn, item_id, workload, clean, "source", ref, now)
                gone = conn.execute(
                    update(t.knowledge_items)
                    .where(ki.source_ref == ref, ki.stale.is_(False), ki.id.notin_(keep or {""}))
                    .values(stale=True)
                )
                report.stale += gone.rowcount or 0
            for name in set(state) - set(new_state):  # the document vanished
                gone = conn.execute(
                    update(t.knowledge_items)
                    .where(ki.source_ref == f"{source['id']}:{name}", ki.stale.is_(False))
                    .values(stale=True)
                )
                report.stale += gone.rowcount or 0
            conn.execute(
                update(t.knowledge_sources)
                .where(t.knowledge_sources.c.id == source["id"])
                .values(state=new_state, last_read_at=now)
            )
    return report


def _upsert(conn: Any, item_id: str, workload: str, text: str, kind: str, ref: str, now: datetime) -> int:
    """Insert an item, or mark an existing one fresh again; 1 when it is new."""
    ki = t.knowledge_items.c
    exists = conn.execute(select(ki.id).where(ki.id == item_id)).first()
    if exists is not None:
        conn.execute(
            update(t.knowledge_items)
            .where(ki.id == item_id)
            .values(stale=False, refreshed_at=now, source_kind=kind, source_ref=ref)
        )
        return 0
    conn.execute(
        t.knowledge_items.insert(),
        {
            "id": item_id,
            "workload": workload,
            "text": text,
            "source_kind": kind,
            "source_ref": ref,
            "created_at": now,
            "refreshed_at": now,
            "stale": False,
            "embedding_model": None,
            "vector": None,
        },
    )
    return 1


# ---------------------------------------------------------- from the traffic


def _correction_text(row: dict[str, Any]) -> str:
    question = last_user_text(row["messages"]).strip()
    target = row["target"]
    if target.get("tool_calls") is not None:
        calls = "; ".join(
            f"{c['name']}({', '.join(f'{k}={json.dumps(v)}' for k, v in (c.get('arguments') or {}).items())})"
            for c in target["tool_calls"]
        )
        answer = calls or "no function call"
    else:
        output = target.get("output")
        answer = output if isinstance(output, str) else json.dumps(output, default=str)
    return f'For a request like "{question[:400]}", the right answer is: {answer}'


def gather_items(
    store: Store, workload: str, dataset_id: str, *, max_chars: int = 2000
) -> tuple[dict[str, int], Counter[str]]:
    """Corrections and missing-knowledge annotations of the dataset's non-eval
    tasks become knowledge items; returns (new items by source kind, rejections)."""
    dataset = store.get_dataset(dataset_id)
    validate = _Validator(max_chars)
    rows = store.dataset_examples(dataset_id)
    eval_tasks = {r["task_id"] for r in rows if r["split"] == "eval"}
    added: Counter[str] = Counter()
    now = utcnow()
    found: list[tuple[Any, str, str]] = []  # (text as logged, kind, ref)
    for row in rows:
        if row["split"] == "eval" or row["source"] != "correction" or row["kind"] != "sft":
            continue
        found.append((_correction_text(row), "correction", row["task_id"]))
    a, tk = t.annotations.c, t.tasks.c
    query = (
        select(a.task_id, a.data)
        .join(t.tasks, tk.id == a.task_id)
        .where(tk.workload == workload, a.kind == "missing_knowledge")
    )
    if dataset["cutoff"] is not None:
        query = query.where(a.ingested_at <= dataset["cutoff"])
    with store.engine.connect() as conn:
        for task_id, data in conn.execute(query):
            if task_id not in eval_tasks:
                found.append(((data or {}).get("text"), "missing_knowledge", task_id))
    with store._writing() as conn:
        for text, kind, ref in found:
            clean = validate(text)
            if clean is not None:
                added[kind] += _upsert(conn, _item_id(workload, clean), workload, clean, kind, ref, now)
    return dict(added), validate.rejected


def _embed_missing(store: Store, workload: str, embedder: Any) -> int:
    ki = t.knowledge_items.c
    with store.engine.connect() as conn:
        todo = conn.execute(
            select(ki.id, ki.text).where(
                ki.workload == workload,
                ki.stale.is_(False),
                (ki.vector.is_(None)) | (ki.embedding_model != embedder.name),
            )
        ).all()
    for start in range(0, len(todo), 256):
        batch = todo[start : start + 256]
        vectors = np.asarray(embedder.embed([r.text for r in batch]), dtype=np.float32)
        with store._writing() as conn:
            for r, v in zip(batch, vectors, strict=True):
                conn.execute(
                    update(t.knowledge_items)
                    .where(ki.id == r.id)
                    .values(vector=v.tobytes(), embedding_model=embedder.name)
                )
    return len(todo)


# ------------------------------------------------------------------ quality


def relevance_votes(store: Store, workload: str) -> dict[str, tuple[int, int]]:
    """{document id: (relevant, irrelevant)} from reviewers' annotations."""
    a, tk = t.annotations.c, t.tasks.c
    votes: dict[str, list[int]] = {}
    with store.engine.connect() as conn:
        rows = conn.execute(
            select(a.data)
            .join(t.tasks, tk.id == a.task_id)
            .where(tk.workload == workload, a.kind == "knowledge_relevance")
        )
        for (data,) in rows:
            doc = str((data or {}).get("document_id"))
            counts = votes.setdefault(doc, [0, 0])
            counts[0 if (data or {}).get("relevant") else 1] += 1
    return {k: (v[0], v[1]) for k, v in votes.items()}


def retrieval_quality(store: Store, workload: str) -> dict[str, Any]:
    """How relevant the retrieved documents were, by reviewers' annotations:
    precision over annotated (task, document) pairs, and the share of judged
    retrievals that held at least one relevant document."""
    a, s, tk = t.annotations.c, t.steps.c, t.tasks.c
    with store.engine.connect() as conn:
        judged: dict[tuple[str, str], bool] = {
            (r.task_id, str((r.data or {}).get("document_id"))): bool((r.data or {}).get("relevant"))
            for r in conn.execute(
                select(a.task_id, a.data)
                .join(t.tasks, tk.id == a.task_id)
                .where(tk.workload == workload, a.kind == "knowledge_relevance")
                .order_by(a.at)
            )
        }
        tasks = sorted({task for task, _ in judged})
        retrieved: dict[str, list[str]] = {}
        for start in range(0, len(tasks), 1000):
            for r in conn.execute(
                select(s.task_id, s.data).where(
                    s.kind == "retrieval", s.task_id.in_(tasks[start : start + 1000])
                )
            ):
                docs = (r.data or {}).get("documents") or []
                retrieved.setdefault(r.task_id, []).extend(str(d.get("id")) for d in docs)
    pairs = [(task, doc) for task, docs in retrieved.items() for doc in docs if (task, doc) in judged]
    relevant = sum(judged[p] for p in pairs)
    hit = sum(any(judged.get((task, d), False) for d in docs) for task, docs in retrieved.items())
    return {
        "annotated_documents": len(pairs),
        "precision": relevant / len(pairs) if pairs else None,
        "retrievals": len(retrieved),
        "hit_rate": hit / len(retrieved) if retrieved else None,
    }


# ----------------------------------------------------------------- strategy


@dataclass
class KnowledgeStrategy:
    """Gathers and refreshes knowledge, then pins a new index snapshot."""

    name: str = "knowledge"
    k: int = 3  # items retrieved per request
    min_score: float = 0.35
    max_chars: int = 2000
    max_age_days: float | None = 90.0  # items their source has not confirmed for this long are stale

    def build(self, store: Store, workload: str, dataset_id: str, current: AgentVersion | None) -> Candidate:
        from flywheel.models.embedding import Embedder

        refreshed = refresh_sources(store, workload, max_chars=self.max_chars)
        added, rejected = gather_items(store, workload, dataset_id, max_chars=self.max_chars)
        ki = t.knowledge_items.c
        aged = 0
        if self.max_age_days is not None:
            limit = utcnow() - timedelta(days=self.max_age_days)
            with store._writing() as conn:
                aged = (
                    conn.execute(
                        update(t.knowledge_items)
                        .where(ki.workload == workload, ki.stale.is_(False), ki.refreshed_at < limit)
                        .values(stale=True)
                    ).rowcount
                    or 0
                )
        embedder = Embedder()
        embedded = _embed_missing(store, workload, embedder)
        votes = relevance_votes(store, workload)
        with store.engine.connect() as conn:
            rows = conn.execute(
                select(ki.id, ki.text, ki.source_kind, ki.source_ref, ki.refreshed_at, ki.vector)
                .where(ki.workload == workload, ki.stale.is_(False), ki.embedding_model == embedder.name)
                .order_by(ki.id)
            ).all()
            stale = conn.execute(
                select(func.count()).where(ki.workload == workload, ki.stale.is_(True))
            ).scalar_one()

        def judged_irrelevant(item_id: str) -> bool:
            relevant, irrelevant = votes.get(item_id, (0, 0))
            return irrelevant > max(1, relevant)

        judged_out = [r.id for r in rows if judged_irrelevant(r.id)]
        rows = [r for r in rows if not judged_irrelevant(r.id)]
        if not rows:
            raise InvalidInput(
                f"workload {workload!r} has no knowledge: no corrections or missing-knowledge "
                "annotations outside the eval split, and no readable source",
                hint="annotate missing knowledge in review, or flywheel knowledge add-source PATH",
            )
        items = [
            {
                "id": r.id,
                "text": r.text,
                "source": f"{r.source_kind}:{r.source_ref}",
                "refreshed_at": _aware(r.refreshed_at).isoformat() if r.refreshed_at else None,  # type: ignore[union-attr]
            }
            for r in rows
        ]
        vectors = np.stack([np.frombuffer(r.vector, dtype=np.float32) for r in rows])
        data = encode_snapshot(items, vectors, embedder.name)
        by_kind = Counter(r.source_kind for r in rows)
        ref = put_artefact(
            store,
            "knowledge-index",
            data,
            {"workload": workload, "dataset_id": dataset_id, "items": len(items), "by_source": dict(by_kind)},
        )
        config: dict[str, Any] = dict(current.config) if current else {"model": "local"}
        previous = (config.get("knowledge_snapshot") or {}).get("ref")
        config["knowledge_snapshot"] = {"ref": ref, "k": self.k, "min_score": self.min_score}
        changes = [
            f"knowledge index {ref[:19]}…: {len(items)} items "
            f"({', '.join(f'{n} {kind}' for kind, n in sorted(by_kind.items()))}); retrieves {self.k} per "
            f"request above cosine {self.min_score}",
            f"new items: {sum(added.values())} from the traffic "
            f"({', '.join(f'{n} {k}' for k, n in sorted(added.items())) or 'none'}), "
            f"{refreshed.added} from sources; {embedded} embedded",
        ]
        if refreshed.sources:
            changes.append("sources: " + refreshed.line())
            for uri, error in (refreshed.failed or {}).items():
                changes.append(
                    f"source {uri} could not be read (its passages are kept as they were): {error}"
                )
        if stale or aged:
            changes.append(
                f"{stale} stale items left out ({aged} not confirmed in {self.max_age_days:g} days)"
            )
        if rejected:
            changes.append(
                "rejected by validation: " + ", ".join(f"{n} {why}" for why, n in sorted(rejected.items()))
            )
        if judged_out:
            changes.append(f"{len(judged_out)} items left out: reviewers marked them irrelevant more often")
        if previous:
            try:
                before = {i["id"] for i in json.loads(get_artefact(store, previous)[1])["items"]}
                now_ids = {i["id"] for i in items}
                changes.append(
                    f"against the current snapshot: +{len(now_ids - before)} items, -{len(before - now_ids)}"
                )
            except NotFound:  # pinned from another store: nothing to compare with
                pass
        quality = retrieval_quality(store, workload)
        if quality["annotated_documents"]:
            changes.append(
                f"retrieval so far: precision {quality['precision']:.0%} over "
                f"{quality['annotated_documents']} annotated documents, a relevant one in "
                f"{quality['hit_rate']:.0%} of {quality['retrievals']} judged retrievals"
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

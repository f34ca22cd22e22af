"""Labels written by people (feedback, corrections, annotations): their identity
and their one-transaction write.

A label's author is whoever sent it (``key:NAME``), set by the caller, never
taken from the label's body.

**Identity** (a retry is never stored twice): a label's id is the client's
``id`` when it gives one; else it is derived from the author, the task, the
label's content (its ``at`` included when the client gives one) and a nonce
(the ``Idempotency-Key`` header of the API, the id of the rendered form on the
pages). Sending the same label again is therefore the same label; to record
the same content twice on purpose, send another ``Idempotency-Key``, ``id``
or ``at``.

**One transaction**: the label's rows, the review item's new state and the
audit event are committed together, or none of them is.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from typing import Any

import orjson
from sqlalchemy import Connection, update
from sqlalchemy.exc import DBAPIError

from flywheel.errors import InvalidInput, StoreUnavailable
from flywheel.ingest import Ingestor, IngestResult
from flywheel.records import utcnow
from flywheel.store import Store, WriteResult
from flywheel.store import tables as t

__all__ = ["StoredLabel", "label_id", "store_label"]


def label_id(author: str, task_id: str, event: dict[str, Any], nonce: str | None = None) -> str:
    """The id of a label the client gave none: the same label sent again gets the same id."""
    content = {k: v for k, v in event.items() if k not in ("id", "author", "task_id", "source")}
    try:
        basis = orjson.dumps(
            [author, task_id, nonce, content], option=orjson.OPT_SORT_KEYS | orjson.OPT_NON_STR_KEYS
        )
    except TypeError:
        # What orjson does not write (an integer beyond 64 bits, a lone surrogate) the
        # standard library does; validation then refuses the label with a 400.
        basis = json.dumps([author, task_id, nonce, content], sort_keys=True, default=str).encode()
    return "label-" + hashlib.sha256(basis).hexdigest()[:32]


@dataclass
class StoredLabel:
    id: str
    stored: bool  # false: a label with this id was stored before (a retry)
    changed: bool  # whether the review item's state changed
    result: IngestResult


def store_label(
    store: Store,
    ingestor: Ingestor,
    event: dict[str, Any],
    *,
    actor: str,
    action: str,
    state: str | None = None,
) -> StoredLabel:
    """Validate and redact one label ``event`` (it has its id, author and task), then
    commit it with the review item's ``state`` (None: unchanged) and an audit event
    of ``action`` by ``actor``, in one transaction. A retried label stores nothing
    and audits nothing, unless it moves the item to a state it has left since."""
    task_id = event["task_id"]
    prepared = ingestor.prepare([event])
    if prepared.rejected:
        problem = prepared.rejected[0]
        raise InvalidInput(f"{problem.field}: {problem.message}")
    changed = False

    def then(conn: Connection, written: WriteResult) -> None:
        nonlocal changed
        if state is not None:
            c = t.review_items.c
            moved = conn.execute(
                update(t.review_items)
                .where(c.task_id == task_id, c.state != state)
                .values(state=state, reviewer=actor, updated_at=utcnow())
            )
            changed = moved.rowcount > 0
        if written.stored or changed:
            details = {"label_id": event["id"], **({"state": state} if state is not None else {})}
            store._audit(conn, actor, action, "task", task_id, details)

    try:
        written = store.write_labels(prepared.rows, then)
    except DBAPIError as exc:
        raise StoreUnavailable(
            f"the label could not be stored: {exc.orig}", hint="nothing was committed; retry later"
        ) from exc
    return StoredLabel(event["id"], bool(written.stored), changed, Ingestor.result(prepared, written))

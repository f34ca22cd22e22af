"""A named lease lock in the store, for SQLite and PostgreSQL alike.

Taking the lock is one conditional write: insert the row, or take over a row
whose lease has run out. The holder renews the lease from a background thread
while it works; a holder that crashes stops renewing, so after ``ttl``
seconds anyone may take the lock over. Two takers racing for an expired
lease cannot both win: the takeover is an ``UPDATE ... WHERE expires_at <
now`` on the row, and only one of them matches.
"""

from __future__ import annotations

import os
import socket
import threading
from datetime import UTC, datetime, timedelta
from types import TracebackType

from sqlalchemy import delete, insert, select, update
from sqlalchemy.exc import IntegrityError

from flywheel.errors import Conflict
from flywheel.records import new_id, utcnow
from flywheel.store import Store
from flywheel.store import tables as t

__all__ = ["StoreLock", "lock_holder"]


def lock_holder(store: Store, name: str) -> dict[str, object] | None:
    """The lock's current, unexpired holder, or None."""
    with store.engine.connect() as conn:
        row = conn.execute(select(t.locks).where(t.locks.c.name == name)).mappings().first()
    if row is None or _aware(row["expires_at"]) <= utcnow():
        return None
    return dict(row)


def _aware(value: datetime) -> datetime:
    return value if value.tzinfo else value.replace(tzinfo=UTC)


class StoreLock:
    """``with StoreLock(store, "cycle:bfcl"):`` or ``acquire()``/``release()``."""

    def __init__(self, store: Store, name: str, *, ttl: float = 60.0, owner: str | None = None) -> None:
        if ttl <= 0:
            raise ValueError("the lease must be positive")
        self.store = store
        self.name = name
        self.ttl = ttl
        self.owner = owner or f"{socket.gethostname()}:{os.getpid()}:{new_id()[-8:]}"
        self._stop = threading.Event()
        self._renewer: threading.Thread | None = None

    def try_acquire(self) -> bool:
        now = utcnow()
        expires = now + timedelta(seconds=self.ttl)
        c = t.locks.c
        with self.store._writing() as conn:
            taken = conn.execute(
                update(t.locks)
                .where(c.name == self.name, (c.expires_at < now) | (c.owner == self.owner))
                .values(owner=self.owner, acquired_at=now, expires_at=expires)
            ).rowcount
        if not taken:
            try:
                with self.store._writing() as conn:
                    conn.execute(
                        insert(t.locks).values(
                            name=self.name, owner=self.owner, acquired_at=now, expires_at=expires
                        )
                    )
            except IntegrityError:
                return False  # held by someone else
        self._start_renewing()
        return True

    def acquire(self) -> StoreLock:
        if not self.try_acquire():
            holder = lock_holder(self.store, self.name) or {}
            raise Conflict(
                f"{self.name} is held by {holder.get('owner', 'another process')} "
                f"until {holder.get('expires_at', 'its lease runs out')}",
                hint="wait for it to finish; a crashed holder's lease runs out by itself",
            )
        return self

    def renew(self) -> bool:
        with self.store._writing() as conn:
            return bool(
                conn.execute(
                    update(t.locks)
                    .where(t.locks.c.name == self.name, t.locks.c.owner == self.owner)
                    .values(expires_at=utcnow() + timedelta(seconds=self.ttl))
                ).rowcount
            )

    def release(self) -> None:
        self._stop.set()
        if self._renewer is not None:
            self._renewer.join()
            self._renewer = None
        with self.store._writing() as conn:
            conn.execute(delete(t.locks).where(t.locks.c.name == self.name, t.locks.c.owner == self.owner))

    def _start_renewing(self) -> None:
        if self._renewer is not None:
            return
        self._stop.clear()

        def loop() -> None:
            while not self._stop.wait(self.ttl / 3):
                try:
                    if not self.renew():
                        return  # taken over (we were too slow): stop pretending
                except Exception:  # the store is briefly unreachable: try again next tick
                    continue

        self._renewer = threading.Thread(target=loop, name=f"lock:{self.name}", daemon=True)
        self._renewer.start()

    def __enter__(self) -> StoreLock:
        return self.acquire()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.release()

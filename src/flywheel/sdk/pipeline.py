"""The SDK's delivery pipeline: memory queue -> background flusher -> transport,
with a disk spool for whatever cannot be delivered now.

Guarantees, in the order they matter to an agent:

1. Logging never blocks and never raises into the agent. An event is
   serialised (so later mutation of the agent's objects cannot change it) and
   appended to an in-memory deque; that is all the agent's thread does.
2. Nothing is lost when the server is away. A batch that cannot be delivered
   (connection refused, timeout, 5xx, 429, 401/403) is written to the spool,
   and from then on new batches go behind it, so order is kept. The flusher
   retries with exponential backoff and replays the spool, oldest first,
   when the server answers again; a spool left by a crashed process is
   adopted and replayed by the next one.
3. Memory is bounded. Above ``sdk_queue_size`` queued events the flusher
   spills the oldest to the spool instead of waiting for the network. If the
   agent outruns the flusher and the queue reaches twice that size, the
   agent's own thread writes the oldest ``sdk_queue_size`` events to the spool
   in one file (about a microsecond per event). Events are dropped only when
   the disk refuses them (full, unwritable): oldest first, each one counted in
   ``stats()['dropped']`` and logged, never silent.
4. Replays are safe: events carry ids, and the server stores each id once.
"""

from __future__ import annotations

import contextlib
import fcntl
import logging
import os
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from enum import Enum
from pathlib import Path
from typing import Any

import orjson

log = logging.getLogger(__name__)

__all__ = ["Delivery", "Pipeline", "SendOutcome", "Spool", "encode_event"]


class SendOutcome(Enum):
    DELIVERED = "delivered"  # stored (possibly with some events rejected as invalid)
    RETRY = "retry"  # keep it and try again later
    SPLIT = "split"  # too large: send it in halves


@dataclass
class Delivery:
    outcome: SendOutcome
    rejected: int | None = 0  # None: the whole batch was refused


Transport = Callable[[bytes], Delivery]


def _default(value: Any) -> Any:
    dump = getattr(value, "model_dump", None)
    if callable(dump):  # pydantic models, e.g. OpenAI responses
        return dump(mode="json", exclude_none=True)
    to_dict = getattr(value, "to_dict", None) or getattr(value, "dict", None)
    if callable(to_dict):
        return to_dict()
    if isinstance(value, set | frozenset | tuple):
        return list(value)
    if isinstance(value, bytes):
        return value.decode("utf-8", "replace")
    return str(value)


_OPTIONS = orjson.OPT_NON_STR_KEYS | orjson.OPT_SERIALIZE_NUMPY


def encode_event(event: dict[str, Any]) -> bytes:
    return orjson.dumps(event, default=_default, option=_OPTIONS)


def encode_batch(events: list[bytes]) -> bytes:
    return b'{"events":[' + b",".join(events) + b"]}"


def decode_batch(body: bytes) -> list[bytes]:
    """Split a spooled batch back into its encoded events (used when splitting)."""
    return [orjson.dumps(e) for e in orjson.loads(body)["events"]]


class Spool:
    """Batches on disk, one file each, replayed in name order.

    Each process owns a folder (held by an ``flock``); folders whose owner
    died are adopted by the next process that opens the spool root.
    """

    def __init__(self, root: Path, name: str) -> None:
        self.root = root
        self.dir = root / f"{name}-{os.getpid()}-{os.urandom(3).hex()}"
        self.dir.mkdir(parents=True, exist_ok=True)
        self._lock_file = open(self.dir / ".lock", "w")  # noqa: SIM115 - held for the process's life
        fcntl.flock(self._lock_file, fcntl.LOCK_EX | fcntl.LOCK_NB)
        self._seq = 0
        self._append_lock = threading.Lock()  # the flusher and an overflowing agent thread
        self._adopted: list[tuple[Path, Any]] = []
        self.adopt_orphans()

    def adopt_orphans(self) -> None:
        for folder in sorted(self.root.iterdir()):
            if folder == self.dir or not folder.is_dir():
                continue
            lock = open(folder / ".lock", "a")  # noqa: SIM115
            try:
                fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError:
                lock.close()  # its owner is alive
                continue
            self._adopted.append((folder, lock))
            log.info("adopted spool %s left by an earlier process", folder)

    def _folders(self) -> list[Path]:
        return [folder for folder, _ in self._adopted] + [self.dir]

    def append(self, body: bytes, events: int) -> None:
        """Store one batch; the file name records when, in what order, and how many events."""
        with self._append_lock:
            self._seq += 1
            path = self.dir / f"{time.time_ns():020d}-{self._seq:08d}-{events}.json"
            tmp = path.with_suffix(".tmp")
            tmp.write_bytes(body)
            os.replace(tmp, path)

    def oldest(self) -> Path | None:
        for folder in self._folders():
            files = sorted(folder.glob("*.json"))
            if files:
                return files[0]
        return None

    @staticmethod
    def events_in(path: Path) -> int:
        return int(path.stem.rsplit("-", 1)[1])

    def remove(self, path: Path) -> None:
        path.unlink(missing_ok=True)
        for folder, lock in list(self._adopted):
            if path.parent == folder and not any(folder.glob("*.json")):
                for leftover in folder.glob("*.tmp"):
                    leftover.unlink()
                (folder / ".lock").unlink(missing_ok=True)
                lock.close()
                folder.rmdir()
                self._adopted.remove((folder, lock))

    def files(self) -> int:
        return sum(len(list(folder.glob("*.json"))) for folder in self._folders())

    def close(self) -> None:
        """Release the folder; an empty one is removed."""
        if not any(self.dir.glob("*.json")):
            (self.dir / ".lock").unlink(missing_ok=True)
            self._lock_file.close()
            with contextlib.suppress(OSError):  # another process may have written since
                self.dir.rmdir()
        else:
            self._lock_file.close()
        for _, lock in self._adopted:
            lock.close()


class Pipeline:
    """Owns the queue, the flusher thread and the spool of one SDK client."""

    def __init__(
        self,
        transport: Transport,
        spool: Spool,
        *,
        batch_size: int,
        queue_size: int,
        interval: float,
        max_backoff: float = 30.0,
    ) -> None:
        self.transport = transport
        self.spool = spool
        self.batch_size = batch_size
        self.queue_size = queue_size
        self.interval = interval
        self.max_backoff = max_backoff
        self.queue: deque[bytes] = deque()
        self.counts = {
            "logged": 0,
            "sent": 0,
            "spooled": 0,
            "replayed": 0,
            "rejected": 0,
            "dropped": 0,
            "errors": 0,
        }
        self._wake = threading.Event()
        self._lock = threading.Lock()  # one drain at a time
        self._stopping = False
        self._backoff = 0.0
        self._retry_at = 0.0
        self._thread = threading.Thread(target=self._run, name="flywheel-flusher", daemon=True)
        self._thread.start()

    # ------------------------------------------------------- agent side

    def put(self, event: bytes) -> None:
        queue = self.queue
        queue.append(event)
        self.counts["logged"] += 1
        size = len(queue)
        if size >= self.batch_size:
            if size >= 2 * self.queue_size:
                self._overflow()
            if not self._wake.is_set():  # set() takes a lock; most calls need not
                self._wake.set()

    def _overflow(self) -> None:
        """The agent outran the flusher: move the oldest events to disk from here."""
        batch = []
        while len(self.queue) > self.queue_size:
            try:
                batch.append(self.queue.popleft())
            except IndexError:
                break
        try:
            self.spool.append(encode_batch(batch), len(batch))
            self.counts["spooled"] += len(batch)
        except OSError as exc:
            self.counts["dropped"] += len(batch)
            log.error(
                "flywheel: dropped %d events: the queue is full and the spool refused them: %s",
                len(batch),
                exc,
            )

    # ------------------------------------------------------ flusher side

    def _run(self) -> None:
        while not self._stopping:
            self._wake.wait(self.interval)
            self._wake.clear()
            try:
                self.drain()
            except Exception:  # never let the thread die: count, log, go on
                self.counts["errors"] += 1
                log.exception("flywheel: the flusher failed; events stay queued")

    def drain(self, *, final: bool = False) -> bool:
        """Deliver what is queued (and the spool first). True when nothing is left
        undelivered; on ``final`` whatever cannot be delivered is spooled."""
        with self._lock:
            if not self._replay():
                self._spill(everything=True)
                return False
            while self.queue:
                batch = self._take(self.batch_size)
                if not self._deliver(batch):
                    self._spool(batch)
                    self._spill(everything=True)
                    return False
                if len(self.queue) > self.queue_size:
                    self._spill(everything=False)
            return True

    def _take(self, n: int) -> list[bytes]:
        batch = []
        queue = self.queue
        for _ in range(min(n, len(queue))):
            batch.append(queue.popleft())
        return batch

    def _spool(self, batch: list[bytes]) -> None:
        self.spool.append(encode_batch(batch), len(batch))
        self.counts["spooled"] += len(batch)

    def _spill(self, *, everything: bool) -> None:
        """Move queued events to disk: all of them, or the oldest above the bound."""
        keep = 0 if everything else self.queue_size // 2
        while len(self.queue) > keep:
            self._spool(self._take(min(self.batch_size, len(self.queue) - keep)))

    def _deliver(self, batch: list[bytes]) -> bool:
        if self._retry_at and time.monotonic() < self._retry_at:
            return False
        body = encode_batch(batch)
        delivery = self._send(body, len(batch))
        if delivery is None:
            return False
        self.counts["sent"] += len(batch) - (delivery.rejected or 0)
        return True

    def _send(self, body: bytes, n: int) -> Delivery | None:
        """Send one body; None means 'retry later' (and starts the backoff)."""
        try:
            delivery = self.transport(body)
        except Exception as exc:
            # Warn once per outage, not on every retry.
            (log.debug if self._backoff else log.warning)(
                "flywheel: sending %d events failed (kept, will retry): %s", n, exc
            )
            delivery = Delivery(SendOutcome.RETRY)
        if delivery.outcome is SendOutcome.SPLIT and n > 1:
            events = decode_batch(body)
            half = len(events) // 2
            first = self._send(encode_batch(events[:half]), half)
            if first is None:
                return None
            second = self._send(encode_batch(events[half:]), len(events) - half)
            if second is None:
                # The first half is stored; spool the second so it goes next.
                self.spool.append(encode_batch(events[half:]), len(events) - half)
                self.counts["spooled"] += len(events) - half
                return Delivery(SendOutcome.DELIVERED, (first.rejected or 0) + len(events) - half)
            return Delivery(SendOutcome.DELIVERED, (first.rejected or 0) + (second.rejected or 0))
        if delivery.outcome is SendOutcome.SPLIT:  # one event alone is too large
            log.error("flywheel: an event is larger than the server accepts; it is dropped")
            self.counts["dropped"] += 1
            return Delivery(SendOutcome.DELIVERED, 1)
        if delivery.outcome is SendOutcome.RETRY:
            self._backoff = min(self.max_backoff, max(0.5, self._backoff * 2))
            self._retry_at = time.monotonic() + self._backoff
            return None
        self._backoff = 0.0
        self._retry_at = 0.0
        if delivery.rejected is None:
            delivery.rejected = n
        self.counts["rejected"] += delivery.rejected
        return delivery

    def _replay(self) -> bool:
        """Send spooled batches, oldest first. True once the spool is empty."""
        while True:
            path = self.spool.oldest()
            if path is None:
                return True
            if self._retry_at and time.monotonic() < self._retry_at:
                return False
            try:
                body = path.read_bytes()
                n = self.spool.events_in(path)
            except OSError as exc:
                log.error("flywheel: cannot read spool file %s: %s", path, exc)
                self.counts["errors"] += 1
                return False
            delivery = self._send(body, n)
            if delivery is None:
                return False
            self.counts["replayed"] += n - (delivery.rejected or 0)
            self.spool.remove(path)

    # ----------------------------------------------------------- control

    def flush(self, timeout: float | None = None) -> bool:
        """Deliver everything now (blocking the caller, not the flusher)."""
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            self._retry_at = 0.0
            if self.drain():
                return True
            if deadline is None or time.monotonic() >= deadline:
                return False
            time.sleep(min(0.2, max(0.0, deadline - time.monotonic())))

    def close(self, timeout: float = 5.0) -> None:
        """Flush for up to ``timeout`` seconds, spool the rest, stop the thread."""
        self.flush(timeout)
        self._stopping = True
        self._wake.set()
        self._thread.join(timeout=1.0)
        with self._lock:
            self._spill(everything=True)
        self.spool.close()

    def stats(self) -> dict[str, int]:
        return {**self.counts, "queued": len(self.queue), "spool_files": self.spool.files()}

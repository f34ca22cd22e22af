"""The SDK's delivery pipeline: memory queue -> background flusher -> transport,
with a disk spool for whatever cannot be delivered now, and a dead-letter file
for what the server will never take.

Guarantees, in the order they matter to an agent:

1. Logging never blocks and never raises into the agent. An event is
   serialised (so later mutation of the agent's objects cannot change it) and
   appended to an in-memory deque; that is all the agent's thread does.
2. Nothing is lost when the server is away. A batch that cannot be delivered
   now (connection refused, timeout, 5xx, 408, 425, 429, and 401/403/404/405,
   which say the key or the URL is wrong, not the batch) is written to the
   spool, and from then on new batches go behind it, so order is kept. The
   flusher retries with exponential backoff and full jitter (never sooner than
   a ``Retry-After`` asks) and replays the spool, oldest first, when the
   server answers again; a spool left by a crashed process is adopted and
   replayed by the next one.
3. A bad batch cannot block the queue. What the server refuses for good (any
   other 4xx: the whole batch, or the events a 200 or 422 names as rejected)
   is appended to ``dead-letter.jsonl`` in the spool folder, one event per
   line with the server's error, and never resent; the accepted events of a
   partly rejected batch are not resent either. A batch the server keeps
   answering with a 5xx is quarantined to the same file once it has been
   refused ``sdk_quarantine_attempts`` times over at least
   ``sdk_quarantine_after`` seconds while the server's ``/healthz`` answers
   (a server whose database is down refuses every batch alike; those wait).
4. Memory is bounded. Above ``sdk_queue_size`` queued events the flusher
   spills the oldest to the spool instead of waiting for the network. If the
   agent outruns the flusher and the queue reaches twice that size, the
   agent's own thread writes the oldest ``sdk_queue_size`` events to the spool
   in one file (about a microsecond per event). Events are dropped only when
   the disk refuses them (full, unwritable): oldest first, each one counted in
   ``stats()['dropped']`` and logged, never silent.
5. Replays are safe: events carry ids, and the server stores each id once.
"""

from __future__ import annotations

import contextlib
import fcntl
import logging
import os
import random
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from datetime import UTC, datetime
from enum import Enum
from pathlib import Path
from typing import Any, Protocol

import orjson

log = logging.getLogger(__name__)

__all__ = ["Delivery", "Pipeline", "SendOutcome", "Spool", "Transport", "encode_event"]

DEAD_LETTER_FILE = "dead-letter.jsonl"
_FIRST_BACKOFF = 0.5  # seconds: the ceiling of the first retry's delay
_MAX_RETRY_AFTER = 600.0  # a longer Retry-After is honoured up to this


class SendOutcome(Enum):
    DELIVERED = "delivered"  # stored, but for the events ``errors`` names
    REFUSED = "refused"  # refused for good (a 4xx): sending it again cannot help
    RETRY = "retry"  # keep it and try again later
    SPLIT = "split"  # too large: send it in halves


@dataclass
class Delivery:
    """What became of one batch. ``errors`` are per-event errors, each a dict
    with the event's ``index`` in the batch (and the server's ``field`` and
    ``message``); ``status`` is the HTTP status (None in-process or when the
    server was not reached); ``message`` says why a batch was refused or kept."""

    outcome: SendOutcome
    errors: list[dict[str, Any]] = field(default_factory=list)
    status: int | None = None
    message: str = ""
    retry_after: float | None = None  # seconds the server asked us to wait


class Transport(Protocol):
    def __call__(self, body: bytes) -> Delivery: ...

    def healthy(self) -> bool:
        """Whether the server (and its database) answers at all: a batch it
        refuses with a 5xx while healthy is the batch's fault."""
        ...


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

    def append(self, body: bytes, events: int) -> Path:
        """Store one batch; the file name records when, in what order, and how many events."""
        with self._append_lock:
            self._seq += 1
            path = self.dir / f"{time.time_ns():020d}-{self._seq:08d}-{events}.json"
            tmp = path.with_suffix(".tmp")
            tmp.write_bytes(body)
            os.replace(tmp, path)
            return path

    @property
    def dead_letter_path(self) -> Path:
        return self.root / DEAD_LETTER_FILE

    def dead_letter(self, lines: list[bytes]) -> None:
        """Append JSON lines to the dead-letter file, shared by every process
        of this spool folder (whole lines under an ``flock``)."""
        with open(self.dead_letter_path, "ab") as handle:
            fcntl.flock(handle, fcntl.LOCK_EX)
            handle.write(b"".join(line + b"\n" for line in lines))

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
        quarantine_attempts: int = 10,
        quarantine_after: float = 600.0,
    ) -> None:
        self.transport = transport
        self.spool = spool
        self.batch_size = batch_size
        self.queue_size = queue_size
        self.interval = interval
        self.max_backoff = max_backoff
        self.quarantine_attempts = quarantine_attempts
        self.quarantine_after = quarantine_after
        self.queue: deque[bytes] = deque()
        self.counts = {
            "logged": 0,
            "sent": 0,
            "spooled": 0,
            "replayed": 0,
            "rejected": 0,
            "quarantined": 0,
            "dead_lettered": 0,
            "dropped": 0,
            "errors": 0,
        }
        self._wake = threading.Event()
        self._lock = threading.Lock()  # one drain at a time
        self._stopping = False
        self._failures = 0  # consecutive sends that must be retried
        self._retry_at = 0.0  # monotonic time before which nothing is sent
        self._not_before = 0.0  # the same, as a Retry-After asked: flush() honours it too
        self._last: Delivery | None = None  # the answer of the last send
        # A spooled batch's 5xx refusals: file name -> (count, monotonic time of the first)
        self._refusals: dict[str, tuple[int, float]] = {}
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
                    path = self._spool(batch)
                    self._count_refusal(path.name)
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

    def _spool(self, batch: list[bytes]) -> Path:
        path = self.spool.append(encode_batch(batch), len(batch))
        self.counts["spooled"] += len(batch)
        return path

    def _spill(self, *, everything: bool) -> None:
        """Move queued events to disk: all of them, or the oldest above the bound."""
        keep = 0 if everything else self.queue_size // 2
        while len(self.queue) > keep:
            self._spool(self._take(min(self.batch_size, len(self.queue) - keep)))

    def _waiting(self) -> bool:
        return bool(self._retry_at) and time.monotonic() < self._retry_at

    def _deliver(self, batch: list[bytes]) -> bool:
        if self._waiting():
            self._last = None  # not sent: nothing to count against the batch
            return False
        stored = self._send(encode_batch(batch), len(batch))
        if stored is None:
            return False
        self.counts["sent"] += stored
        return True

    def _send(self, body: bytes, n: int) -> int | None:
        """Send one body. Returns how many of its events the server stored (the
        ones it refused for good are dead-lettered), or None: keep the body and
        retry later (the backoff has started; ``self._last`` says why)."""
        try:
            delivery = self.transport(body)
        except Exception as exc:
            delivery = Delivery(SendOutcome.RETRY, message=f"{type(exc).__name__}: {exc}")
        self._last = delivery
        if delivery.outcome is SendOutcome.RETRY:
            # Warn once per outage, not on every retry.
            (log.debug if self._failures else log.warning)(
                "flywheel: sending %d events failed (kept, will retry): %s%s",
                n,
                f"{delivery.status} " if delivery.status else "",
                delivery.message,
            )
            self._back_off(delivery.retry_after)
            return None
        self._failures = 0
        self._retry_at = 0.0
        if delivery.outcome is SendOutcome.SPLIT:
            if n > 1:
                return self._send_halves(body)
            delivery = Delivery(
                SendOutcome.REFUSED,
                status=delivery.status,
                message=delivery.message or "the event is larger than the server accepts",
            )
        if delivery.outcome is SendOutcome.REFUSED:
            log.error(
                "flywheel: the server refused %d events for good (%s): %s; they are in %s",
                n,
                delivery.status,
                delivery.message[:300],
                self.spool.dead_letter_path,
            )
            named = {e.get("index"): e for e in delivery.errors}
            status = delivery.status
            self._dead_letter(body, [(i, named[i]) for i in range(n) if i in named], "rejected", status)
            whole = [(i, {"index": i, "message": delivery.message}) for i in range(n) if i not in named]
            self._dead_letter(body, whole, "refused", status)
            self.counts["rejected"] += n
            return 0
        # One line per event, even when the server reports several errors of one.
        failed = list({e["index"]: e for e in delivery.errors if 0 <= e.get("index", -1) < n}.items())
        for _, error in failed[:5]:
            log.warning("flywheel: the server rejected an event: %s", error)
        if failed:
            self._dead_letter(body, failed, "rejected", delivery.status)
            self.counts["rejected"] += len(failed)
        return n - len(failed)

    def _send_halves(self, body: bytes) -> int | None:
        events = decode_batch(body)
        half = len(events) // 2
        first = self._send(encode_batch(events[:half]), half)
        if first is None:
            return None
        second = self._send(encode_batch(events[half:]), len(events) - half)
        if second is None:
            # The first half is stored; spool the second so it goes next.
            self._spool(events[half:])
            return first
        return first + second

    def _back_off(self, retry_after: float | None) -> None:
        """Exponential backoff with full jitter: a random delay up to a ceiling
        that doubles with each consecutive failure, never shorter than the
        server's Retry-After."""
        self._failures += 1
        ceiling = min(self.max_backoff, _FIRST_BACKOFF * 2 ** min(self._failures - 1, 30))
        delay = random.uniform(0.0, ceiling)
        now = time.monotonic()
        if retry_after is not None:
            wait = min(max(retry_after, 0.0), _MAX_RETRY_AFTER)
            self._not_before = now + wait
            delay = max(delay, wait)
        self._retry_at = now + delay

    def _dead_letter(
        self, body: bytes, failed: list[tuple[int, dict[str, Any]]], reason: str, status: int | None
    ) -> None:
        """Write the failed events of ``body`` to the dead-letter file, each with its error."""
        if not failed:
            return
        try:
            events = orjson.loads(body)["events"]
        except (orjson.JSONDecodeError, KeyError, TypeError) as exc:  # a spool file we did not write
            log.error("flywheel: cannot read a refused batch to dead-letter it: %s", exc)
            self.counts["dropped"] += len(failed)
            return
        at = datetime.now(UTC).isoformat()
        lines = [
            orjson.dumps(
                {"at": at, "reason": reason, "status": status, "error": error, "event": events[index]}
            )
            for index, error in failed
            if index < len(events)
        ]
        try:
            self.spool.dead_letter(lines)
        except OSError as exc:
            self.counts["dropped"] += len(lines)
            log.error(
                "flywheel: dropped %d refused events: the dead-letter file refused them: %s", len(lines), exc
            )
            return
        self.counts["dead_lettered"] += len(lines)

    def _count_refusal(self, name: str) -> None:
        """Remember a 5xx refusal of the spooled batch ``name`` (others do not count:
        a server that is away or overloaded is no fault of the batch)."""
        last = self._last
        if last is None or last.status is None or last.status < 500:
            return
        count, first = self._refusals.get(name, (0, time.monotonic()))
        self._refusals[name] = (count + 1, first)

    def _quarantine(self, path: Path, body: bytes, n: int) -> bool:
        """Dead-letter a batch the server keeps refusing with a 5xx while it is
        otherwise healthy. True when it was quarantined."""
        count, first = self._refusals.get(path.name, (0, 0.0))
        if not count or count < self.quarantine_attempts:
            return False
        if time.monotonic() - first < self.quarantine_after:
            return False
        try:
            healthy = self.transport.healthy()
        except Exception:
            healthy = False
        if not healthy:
            return False  # the server is failing every batch: this one waits with the rest
        last = self._last
        error = {"message": f"refused {count} times; the last answer: {last.message if last else ''}"}
        log.error(
            "flywheel: quarantined %d events the server refused %d times over %.0f s (%s): they are in %s",
            n,
            count,
            time.monotonic() - first,
            last.status if last else None,
            self.spool.dead_letter_path,
        )
        status = last.status if last else None
        self._dead_letter(body, [(i, {"index": i, **error}) for i in range(n)], "quarantined", status)
        self.counts["quarantined"] += n
        self._refusals.pop(path.name, None)
        self.spool.remove(path)
        self._failures = 0
        self._retry_at = self._not_before = 0.0
        return True

    def _replay(self) -> bool:
        """Send spooled batches, oldest first. True once the spool is empty."""
        while True:
            path = self.spool.oldest()
            if path is None:
                return True
            if self._waiting():
                return False
            try:
                body = path.read_bytes()
                n = self.spool.events_in(path)
            except OSError as exc:
                log.error("flywheel: cannot read spool file %s: %s", path, exc)
                self.counts["errors"] += 1
                return False
            stored = self._send(body, n)
            if stored is None:
                self._count_refusal(path.name)
                if self._quarantine(path, body, n):
                    continue
                return False
            self.counts["replayed"] += stored
            self._refusals.pop(path.name, None)
            self.spool.remove(path)

    # ----------------------------------------------------------- control

    def flush(self, timeout: float | None = None) -> bool:
        """Deliver everything now (blocking the caller, not the flusher); only a
        server's Retry-After is waited for."""
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            self._retry_at = self._not_before if self._not_before > time.monotonic() else 0.0
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

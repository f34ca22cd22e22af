"""Group commit: one writer thread turns concurrent batches into one transaction.

Each request hands its rows to ``BulkWriter.submit`` and waits on the future;
the thread drains whatever is queued, writes it in one transaction, commits,
then resolves every future. A 200 is therefore sent only after the commit, yet
the cost of a commit (an fsync with SQLite) is shared by all waiting requests.
"""

from __future__ import annotations

import logging
import queue
import threading
from concurrent.futures import Future

from flywheel.store import RowBatch, Store, TraceAssembler, WriteResult

__all__ = ["BulkWriter"]

log = logging.getLogger(__name__)

_STOP = object()


class BulkWriter:
    def __init__(
        self, store: Store, *, max_rows: int = 20_000, assemble: TraceAssembler | None = None
    ) -> None:
        self.store = store
        self.assemble = assemble
        self.max_rows = max_rows
        self._queue: queue.Queue[object] = queue.Queue()
        self._thread = threading.Thread(target=self._run, name="flywheel-writer", daemon=True)
        self._thread.start()
        self.pending_rows = 0

    def submit(self, batch: RowBatch) -> Future[WriteResult]:
        future: Future[WriteResult] = Future()
        if not len(batch):
            future.set_result(WriteResult())
            return future
        self.pending_rows += len(batch)
        self._queue.put((batch, future))
        return future

    def close(self) -> None:
        self._queue.put(_STOP)
        self._thread.join()

    def _run(self) -> None:
        stopping = False
        while not stopping:
            item = self._queue.get()
            if item is _STOP:
                return
            group: list[tuple[RowBatch, Future[WriteResult]]] = [item]  # type: ignore[list-item]
            rows = len(group[0][0])
            while rows < self.max_rows:
                try:
                    item = self._queue.get_nowait()
                except queue.Empty:
                    break
                if item is _STOP:
                    stopping = True
                    break
                group.append(item)  # type: ignore[arg-type]
                rows += len(item[0])  # type: ignore[index]
            self._write(group)
            self.pending_rows -= rows

    def _write(self, group: list[tuple[RowBatch, Future[WriteResult]]]) -> None:
        try:
            results = self.store.write_batches([batch for batch, _ in group], assemble=self.assemble)
        except Exception as exc:
            if len(group) == 1:
                log.exception("writing a batch of %d rows failed", len(group[0][0]))
                group[0][1].set_exception(exc)
                return
            # Isolate the failing batch: the others must not fail with it.
            for member in group:
                self._write([member])
            return
        for (_, future), result in zip(group, results, strict=True):
            future.set_result(result)

"""Writing batches on several database sessions at once, in file order.

Each session has its own `Loader` (and staging table) and a thread. Batches go to the
sessions in turn: while batch i merges on one, batch i+1 is already being COPYed into
the other's staging table (a batch COPYed straight into the table waits for the merge
before it: that COPY is its merge). Order is kept where it matters:

- batch i+1 merges only after batch i merged, so a batch can only ever wait (in the
  database, on a key both hold) on the batch before it, never the other way: no
  deadlock;
- batch i+1 runs `bookkeeping` and commits only after batch i committed, so what
  `bookkeeping` records (the checkpoint) always describes a prefix of the source.

If a batch fails, every later one rolls back; the caller gets the error from `done`.

Concurrent loads of overlapping keys (other jobs) take row locks in key order where they
merge from staging (both merges sort by the key); a batch COPYed straight in inserts in
file order, but it only succeeds when all its keys are new, so two loads meet there only
on keys both insert. A batch that loses a deadlock (Postgres detects it) or a
serialization failure before it merged is rolled back and written again, up to `RETRIES` times with a
short random pause, each retry counted in `store_backfill_batch_retries_total{reason}`.
"""

from __future__ import annotations

import queue
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import partial
from typing import Any

import psycopg

from app import metrics, retry
from app.backfill.loader import Loader
from app.backfill.rows import Batch

POLL = 0.2
RETRIES = 5  # writes of one batch after a deadlock, at most
_RETRYABLE = (psycopg.errors.DeadlockDetected, psycopg.errors.SerializationFailure)

# bookkeeping(conn, state before the batch, batch, rows written) -> state after it; runs
# inside the batch's transaction, batches in file order.
Bookkeeping = Callable[[psycopg.Connection, Any, Batch, int], Any]


class Stopped(Exception):
    """The batch before this one failed, or the pipeline is stopping: roll this one back."""


@dataclass
class Slot:
    """One batch on its way into the table."""

    index: int
    batch: Batch
    prev: Slot | None
    merged: threading.Event = field(default_factory=threading.Event)
    committed: threading.Event = field(default_factory=threading.Event)
    ok: bool = False
    written: int = 0
    seconds: float = 0.0
    after: Any = None  # what bookkeeping returned: the state once this batch committed
    retries: int = 0  # writes repeated after a deadlock
    error: BaseException | None = None


class Pipeline:
    """Batches in, committed `Slot`s out (on `done`, possibly out of order)."""

    def __init__(self, loaders: list[Loader], bookkeeping: Bookkeeping, base: Any):
        self.loaders = loaders
        self.bookkeeping = bookkeeping
        self.base = base  # the state before the first batch
        self.inboxes: list[queue.Queue] = [queue.Queue(1) for _ in loaders]
        self.done: queue.Queue = queue.Queue()
        self.stopping = threading.Event()
        self.in_flight = threading.Semaphore(len(loaders))  # batches handed over, not yet done
        self.last: Slot | None = None
        self.count = 0
        self.threads = [
            threading.Thread(target=self._lane, args=(i,), name=f"backfill-writer-{i}", daemon=True)
            for i in range(len(loaders))
        ]
        for t in self.threads:
            t.start()

    def submit(self, batch: Batch, wait: Callable[[], None]) -> None:
        """Hand a batch to the next session once one is free; `wait()` runs meanwhile
        (checks, collecting what is done)."""
        while not self.in_flight.acquire(timeout=POLL):
            wait()
        slot = Slot(self.count, batch, self.last)
        inbox = self.inboxes[self.count % len(self.inboxes)]
        self.count += 1
        self.last = slot
        while True:
            try:
                inbox.put(slot, timeout=POLL)
                return
            except queue.Full:
                wait()

    def close(self) -> None:
        """No more batches: let the sessions finish what they have (one that died on an
        error takes nothing more; its error is in `done`)."""
        for inbox, thread in zip(self.inboxes, self.threads, strict=True):
            while thread.is_alive():
                try:
                    inbox.put(None, timeout=POLL)
                    break
                except queue.Full:
                    continue

    def abort(self) -> None:
        """Roll back whatever is not committed yet and stop the threads."""
        self.stopping.set()
        for inbox in self.inboxes:
            try:
                inbox.put_nowait(None)
            except queue.Full:
                pass
        for t in self.threads:
            t.join(timeout=30)

    def alive(self) -> bool:
        return any(t.is_alive() for t in self.threads)

    @property
    def upserts(self) -> int:
        return self.loaders[0].policy.upserts if self.loaders else 0

    @property
    def direct(self) -> int:
        return self.loaders[0].policy.direct_batches if self.loaders else 0

    def _wait(self, event: threading.Event, prev: Slot) -> None:
        """Wait for the batch before this one to reach a step; Stopped if it failed."""
        while not event.wait(POLL):
            if self.stopping.is_set():
                raise Stopped()
        if prev.error is not None:
            raise Stopped()

    def _lane(self, i: int) -> None:
        loader, inbox = self.loaders[i], self.inboxes[i]
        while True:
            slot = inbox.get()
            if slot is None or self.stopping.is_set():
                return
            try:
                self._write_retrying(loader, slot)
                slot.ok = True
            except BaseException as exc:  # noqa: BLE001 - reported through `done`
                slot.error = exc
            finally:
                slot.merged.set()
                slot.committed.set()
                slot.prev = None
                slot.batch.chunks = []
                self.in_flight.release()
                self.done.put(slot)
            if slot.error is not None:
                return

    def _write_retrying(self, loader: Loader, slot: Slot) -> None:
        def before_pause(_attempt: int, exc: BaseException, _pause: float) -> None:
            # once merged, the next batch may have merged on top of it: no rewrite then
            if slot.merged.is_set() or self.stopping.is_set():
                raise exc
            reason = "deadlock" if isinstance(exc, psycopg.errors.DeadlockDetected) else "serialization"
            metrics.BACKFILL_RETRIES.inc(reason=reason)
            slot.retries += 1

        # jittered pauses differ between the sessions that collided (not synchronisation)
        retry.call(
            partial(self._write, loader, slot),
            on=_RETRYABLE,
            attempts=RETRIES + 1,
            first_pause=0.1,
            max_pause=1.0,
            jitter=True,
            before_pause=before_pause,
        )

    def _write(self, loader: Loader, slot: Slot) -> None:
        prev, batch = slot.prev, slot.batch
        t0 = time.perf_counter()
        with loader.conn.transaction():
            direct = loader.direct(batch)
            if direct is None:
                loader.copy(batch.chunks)  # into staging, while the batch before merges
            if prev is not None:
                self._wait(prev.merged, prev)
            slot.written = loader.merge(batch, direct) if batch.rows else 0
            slot.merged.set()
            if prev is not None:
                self._wait(prev.committed, prev)
            slot.after = self.bookkeeping(
                loader.conn, prev.after if prev is not None else self.base, batch, slot.written
            )
        slot.seconds = time.perf_counter() - t0

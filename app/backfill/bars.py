"""The `bars_ohlcv` backfill: one source into the `bars_ohlcv` table, resumable.

Three kinds of threads:

- the reader (`_Feed`): source -> parse -> validate -> CSV batches, at most
  QUEUE_BATCHES ahead (memory stays flat whatever the size of the source);
- WRITERS sessions of a `Pipeline` (app/backfill/pipeline.py): COPY + merge + the
  checkpoint and job_runs counts, one transaction per batch, overlapping each other
  but merging and committing in file order;
- the job's thread (`_Job`): hands batches over, creates the partitions a batch needs
  before it is written, and turns committed batches into progress, metrics and the
  result.
"""

from __future__ import annotations

import queue
import threading
import time
from contextlib import ExitStack
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import psycopg

from app import metrics
from app.backfill import checkpoints, runs, sources
from app.backfill.checkpoints import State
from app.backfill.layout import Layout
from app.backfill.loader import Loader, MergePolicy
from app.backfill.pipeline import Pipeline, Slot, Stopped
from app.backfill.progress import Progress
from app.backfill.rows import SAMPLE_LIMIT, Batch, Reader, RowLimits, TooManyBadRows, epoch_to_datetime
from app.backfill.task import BackfillError, Task
from app.intervals import in_words
from app.times import iso
from app.timeseries import intervals as bar_intervals
from app.timeseries import partitions, vacuum

JOB = "backfill.bars_ohlcv"
TABLE = "bars_ohlcv"
QUEUE_BATCHES = 1
WRITERS = 2
_END = object()
_POLL = 0.2


@dataclass(frozen=True)
class Params:
    source: sources.Source
    format: str
    max_bad_rows: int
    batch_rows: int
    provider: str | None
    interval: str | None
    source_dir: str  # BACKFILL_SOURCE_DIR
    limits: sources.Limits  # bounds on reading the source (BACKFILL_MAX_*, URL allow list, rates)
    row_limits: RowLimits  # line bounds, the time window, how errors show values
    max_partitions_per_batch: int  # BACKFILL_MAX_PARTITIONS_PER_BATCH
    layout: Layout = Layout()
    group: str | None = None  # the fan-out group of a child run (app/jobs/fanout.py)

    @property
    def key(self) -> str:
        return checkpoints.source_key(JOB, self.source.kind, self.source.location)

    @property
    def fingerprint(self) -> str:
        shape: dict[str, object] = {"format": self.format, "provider": self.provider, "interval": self.interval}
        if not self.layout.is_default:
            shape["layout"] = self.layout.params()
        return checkpoints.fingerprint(**shape)

    def reader(self, stream: Any, state: State | None = None, **kw: Any) -> Reader:
        """The row reader of this source's layout, from the start or from a checkpoint."""
        state = state or State()
        return Reader(
            stream,
            self.format,
            batch_rows=self.batch_rows,
            max_bad_rows=kw.pop("max_bad_rows", self.max_bad_rows),
            provider=self.provider,
            interval=self.interval,
            line=state.line,
            offset=state.byte_offset,
            header=state.header,
            bad_before=state.rows_rejected,
            samples=state.bad_samples,
            limits=self.row_limits,
            layout=self.layout,
            **kw,
        )


def _resumable(cp: checkpoints.Checkpoint | None, params: Params, identity: dict) -> str | None:
    """None if the checkpoint can be resumed, else why the load starts over."""
    if cp is None or cp.status == "done":
        return "no unfinished load of this source"
    if cp.fingerprint != params.fingerprint:
        return "format, provider or interval differ from the unfinished load"
    if params.source.kind == "http" and not (identity.get("etag") or identity.get("last_modified")):
        return "the server sent neither ETag nor Last-Modified, so a changed file cannot be told apart"
    if cp.identity != identity:
        return "the source changed since the unfinished load"
    return None


def _already_loaded(task: Task, conn: psycopg.Connection, params: Params) -> dict | None:
    """A child run of a fan-out triggered again: the file this group already loaded, unchanged
    since and with the same layout, is skipped (its result says so)."""
    if params.group is None:
        return None
    cp = checkpoints.load(conn, params.key)
    if cp is None or cp.status != "done" or cp.group != params.group or cp.fingerprint != params.fingerprint:
        return None
    with sources.open_source(params.source, params.source_dir, params.limits) as opened:
        if opened.identity != cp.identity:
            return None
    st = cp.state
    task.progress(phase="skipped", rows_read=st.rows_read, rows_written=0, percent=100.0)
    return {
        "source": params.source.location,
        "format": params.format,
        "skipped": f"already loaded by run {cp.run_id} of this group; the file has not changed since",
        "rows_read": st.rows_read,
        "rows_written": 0,
        "rows_unchanged": 0,
        "rows_rejected": st.rows_rejected,
        "loaded_before": {"rows_written": st.rows_written, "run_id": cp.run_id},
        "min_ts": st.min_ts.isoformat() if st.min_ts else None,
        "max_ts": st.max_ts.isoformat() if st.max_ts else None,
        "symbols": len(st.symbols),
        "providers": sorted(st.providers),
        "warnings": [],
    }


def load(task: Task, params: Params) -> dict:
    """Run the load; the job's result. Closes the job_runs row whatever happens."""
    started = time.monotonic()
    state = State()
    job_run_id: int | None = None
    try:
        with task.connect() as conn:
            if not checkpoints.try_lock(conn, params.key):
                raise BackfillError(f"another run is loading {params.source.location} right now")
            skipped = _already_loaded(task, conn, params)
            if skipped is not None:
                return skipped
            job_run_id = runs.start(
                conn,
                job_name=JOB,
                dataset=TABLE,
                provider=params.provider,
                fingerprint=params.fingerprint,
                metadata={"run_id": task.run_id, "source": params.source.location, "format": params.format},
            )
            result = _load(task, conn, params, state, job_run_id, started)
    except Exception as exc:  # BackfillError, a stop raised by task.check, database errors
        if job_run_id is not None:
            runs.close_on_error(task, job_run_id, state, params.provider, exc)
        raise
    result["job_run_id"] = job_run_id
    return result


def _load(task: Task, conn: psycopg.Connection, params: Params, state: State, job_run_id: int, started: float) -> dict:
    cp = checkpoints.load(conn, params.key)
    stop = threading.Event()  # set when the load ends, however it ends: the reader stops reading

    def stopped() -> bool:
        if stop.is_set() or task.stopping():
            return True
        try:
            task.check()  # past the deadline too
        except Exception:  # noqa: BLE001 - any stop the task reports
            return True
        return False

    with sources.open_source(params.source, params.source_dir, params.limits, stopped) as opened:
        restart_reason = _resumable(cp, params, opened.identity)
        resumed_from: dict[str, Any] | None = None
        if cp is not None and restart_reason is None:
            state.__dict__.update(cp.state.__dict__)
            opened.skip(state.byte_offset)
            resumed_from = {"line": state.line, "rows_read": state.rows_read, "run_id": cp.run_id}
            checkpoints.adopt(conn, params.key, task.run_id, job_run_id)
        else:
            checkpoints.begin(
                conn,
                params.key,
                job=JOB,
                source=params.source.location,
                fingerprint=params.fingerprint,
                identity=opened.identity,
                run_id=task.run_id,
                job_run_id=job_run_id,
            )
        if cp is not None and cp.job_run_id and cp.job_run_id != job_run_id:
            runs.close_interrupted(conn, cp.job_run_id, f"interrupted; taken over by run {task.run_id}")
        task.log.info(
            "backfill starting",
            source=params.source.location,
            format=params.format,
            compressed=opened.compressed,
            resumed_from_line=state.line if resumed_from else None,
            restart_reason=restart_reason,
        )
        reader = params.reader(opened.stream, state, stopped=stopped)
        job = _Job(task, conn, params, state, job_run_id, opened)
        job.progress = Progress(task.progress, opened, reader, rows_before=state.rows_read)
        feed = _Feed(reader, stop)
        feed.start()

        def bookkeeping(session: psycopg.Connection, before: State, batch: Batch, written: int) -> State:
            after = _advance(before, batch, written)
            checkpoints.advance(session, params.key, after)
            runs.heartbeat(session, job_run_id, after, params.provider)
            return after

        try:
            with ExitStack() as stack:
                policy = MergePolicy()
                loaders = [Loader(stack.enter_context(task.connect()), TABLE, policy) for _ in range(WRITERS)]
                job.run(feed, Pipeline(loaders, bookkeeping, State(**state.__dict__)))
        finally:
            stop.set()
            feed.join(timeout=10)
        checkpoints.finish(conn, params.key, params.group)
        runs.finish(
            conn,
            job_run_id,
            runs.RunStatus.SUCCESS,
            state,
            params.provider,
            extra={"batches": state.batches, "upsert_batches": job.upserts, "direct_batches": job.direct},
        )
        vacuumed = _vacuum(task, conn, job)
        warnings = _retention_warnings(conn, state) + vacuumed.warnings()
        compressed = opened.compressed
    elapsed = time.monotonic() - started
    read_now = state.rows_read - (resumed_from["rows_read"] if resumed_from else 0)
    return {
        "source": params.source.location,
        "format": params.format,
        "compressed": compressed,
        "rows_read": state.rows_read,
        "rows_written": state.rows_written,
        "rows_unchanged": state.rows_read - state.rows_rejected - state.rows_written,
        "rows_rejected": state.rows_rejected,
        "bad_rows": state.bad_samples,
        "min_ts": iso(state.min_ts),
        "max_ts": iso(state.max_ts),
        "symbols": len(state.symbols),
        "providers": sorted(state.providers),
        "batches": state.batches,
        "upsert_batches": job.upserts,
        "direct_batches": job.direct,
        "partitions_created": job.partitions_created,
        "vacuumed": vacuumed.summary(),
        "resumed_from": resumed_from,
        "warnings": warnings,
        "elapsed_s": round(elapsed, 3),
        "rows_per_s": round(read_now / elapsed, 1) if elapsed > 0 else None,
    }


def _vacuum(task: Task, conn: psycopg.Connection, job: _Job) -> vacuum.Vacuumed:
    """VACUUM the partitions (chunks) this run wrote rows into, so the loaded history is
    at rest when the job reports success (app/timeseries/vacuum.py says why). The load
    is complete and recorded before this starts: a table held by another session is
    skipped, and any other failure only adds a warning."""
    if not job.wrote:
        return vacuum.Vacuumed()
    tables = vacuum.tables_for(conn, TABLE, job.days())

    def progress(done: int, total: int) -> None:
        if job.progress is not None:
            job.progress.update(phase="vacuuming", tables_vacuumed=done, tables_to_vacuum=total)

    return vacuum.vacuum(conn, tables, task.check, progress)


def _retention_warnings(conn: psycopg.Connection, state: State) -> list[str]:
    """Say so when loaded rows are older than the table's retention keeps."""
    if state.min_ts is None:
        return []
    row = conn.execute(
        """SELECT retain, now() - retain FROM store_retention_policies
           WHERE table_name = %s AND enabled AND %s < now() - retain""",
        (TABLE, state.min_ts),
    ).fetchone()
    if row is None:
        return []
    return [
        f"rows before {row[1].isoformat()} are older than the retention of {TABLE} ({in_words(row[0])}) and will be "
        f"removed by the next retention run; raise or disable the policy (PUT /retention/policies/{TABLE}) "
        f"to keep them"
    ]


# -- reading -------------------------------------------------------------------------------------
class _Feed(threading.Thread):
    """Reads batches in the background; the job's thread takes them from `queue`."""

    def __init__(self, reader: Reader, stop: threading.Event):
        super().__init__(name="backfill-reader", daemon=True)
        self.reader = reader
        self.queue: queue.Queue = queue.Queue(QUEUE_BATCHES)
        self.stop = stop

    def _put(self, item: object) -> bool:
        while not self.stop.is_set():
            try:
                self.queue.put(item, timeout=_POLL)
                return True
            except queue.Full:
                continue
        return False

    def run(self) -> None:
        try:
            for batch in self.reader.batches():
                if not self._put(batch):
                    return
            self._put(_END)
        except BaseException as exc:  # noqa: BLE001 - handed to the job's thread
            self._put(exc)


# -- writing -------------------------------------------------------------------------------------
def _advance(before: State, batch: Batch, written: int) -> State:
    """The load's state after `batch` (written rows of it: `written`)."""
    after = State(**before.__dict__)
    after.line, after.byte_offset, after.header = batch.end_line, batch.end_offset, batch.header
    after.rows_read += batch.read
    after.rows_written += written
    after.rows_rejected += batch.rejected
    after.bad_samples = (before.bad_samples + batch.samples)[:SAMPLE_LIMIT]
    after.symbols = before.symbols | batch.symbols
    after.providers = before.providers | batch.providers
    if batch.rows:
        lo, hi = epoch_to_datetime(batch.min_epoch), epoch_to_datetime(batch.max_epoch)
        after.min_ts = lo if before.min_ts is None else min(before.min_ts, lo)
        after.max_ts = hi if before.max_ts is None else max(before.max_ts, hi)
    after.batches += 1
    return after


def _days(slots: set[int]) -> list[datetime]:
    """One-day slots (`Batch.slots`: days since the epoch) as UTC midnights, in order."""
    return [partitions.EPOCH + slot * partitions.DAY for slot in sorted(slots)]


class _Job:
    """The job's thread: batches from the feed into the pipeline; committed ones into state."""

    def __init__(
        self,
        task: Task,
        conn: psycopg.Connection,
        params: Params,
        state: State,
        job_run_id: int,
        opened: sources.Opened,
    ):
        self.task, self.conn, self.params, self.state = task, conn, params, state
        self.job_run_id = job_run_id
        self.opened = opened
        self.progress: Progress | None = None  # set by the caller once the reader exists
        self.partitions_created = 0
        self.upserts = 0
        self.direct = 0  # batches COPYed straight into a partition (or the hypertable)
        self._covered: set[int] = set()  # days (since the epoch) known to have a partition
        self._read_at_start = state.rows_read
        self._written_at_start = state.rows_written
        self._started = time.monotonic()
        self._committed: dict[int, Slot] = {}
        self._next = 0

    @property
    def wrote(self) -> bool:
        """Whether this run wrote (inserted or changed) any row."""
        return self.state.rows_written > self._written_at_start

    def days(self) -> list[datetime]:
        """The days (UTC midnights) this run's rows fall on."""
        return _days(self._covered)

    def run(self, feed: _Feed, pipeline: Pipeline) -> None:
        try:
            self._pump(feed, pipeline)
            pipeline.close()
            while self._next < pipeline.count:
                self._collect(pipeline, block=True)
        except BaseException:
            pipeline.abort()
            while True:  # record what did commit before the failure (for job_runs)
                try:
                    slot = pipeline.done.get_nowait()
                except queue.Empty:
                    break
                try:
                    self._take(slot)
                except Exception:  # noqa: BLE001 - the first error is the one raised
                    pass
            raise
        finally:
            self.upserts = pipeline.upserts
            self.direct = pipeline.direct

    def _pump(self, feed: _Feed, pipeline: Pipeline) -> None:
        task = self.task
        beat = max(1.0, task.heartbeat_s)
        idle_since = time.monotonic()

        def wait() -> None:
            task.check()
            self._collect(pipeline, block=False)

        while True:
            try:
                item = feed.queue.get(timeout=_POLL)
            except queue.Empty:
                wait()
                if not feed.is_alive() and feed.queue.empty():
                    raise BackfillError("the source reader stopped unexpectedly") from None
                reader = feed.reader  # reading without a batch yet: show how far it got
                self.task.progress(blank_lines=reader.blank)
                if self.progress is not None:
                    self.progress.update()
                if time.monotonic() - idle_since > beat:  # a slow source: show we are alive
                    runs.heartbeat(self.conn, self.job_run_id, self.state, self.params.provider)
                    idle_since = time.monotonic()
                continue
            idle_since = time.monotonic()
            if item is _END:
                if self.progress is not None:
                    self.progress.update(phase="finishing")
                return
            if isinstance(item, TooManyBadRows):
                self._settle(pipeline)
                self.state.rows_rejected = item.count
                raise item
            if isinstance(item, BaseException):
                self._settle(pipeline)
                raise item
            wait()
            if self.progress is not None:
                self.progress.phase = "loading"
            if item.rows:
                self._ensure_partitions(item)
            pipeline.submit(item, wait)

    def _settle(self, pipeline: Pipeline) -> None:
        """Before failing on a read error: let the batches already handed over commit."""
        pipeline.close()
        while self._next < pipeline.count:
            self._collect(pipeline, block=True)

    def _collect(self, pipeline: Pipeline, block: bool) -> None:
        """Apply finished batches in order; raise the first failure."""
        while True:
            try:
                slot = pipeline.done.get(timeout=_POLL) if block else pipeline.done.get_nowait()
            except queue.Empty:
                if block:
                    self.task.check()
                    if not pipeline.alive() and pipeline.done.empty():
                        raise BackfillError("the database writers stopped unexpectedly") from None
                    continue
                return
            self._take(slot)
            if block:
                return

    def _take(self, slot: Slot) -> None:
        if slot.error is not None:
            if isinstance(slot.error, psycopg.Error):
                # a session we terminated (cancel, timeout, shutdown) is not a write error
                outcome = "cancelled" if self.task.stopping() else "error"
                metrics.SINK_WRITES.inc(slot.batch.rows, sink=TABLE, outcome=outcome)
            if not isinstance(slot.error, Stopped):
                raise slot.error
            return
        self._committed[slot.index] = slot
        while self._next in self._committed:
            self._apply(self._committed.pop(self._next))
            self._next += 1

    def _apply(self, slot: Slot) -> None:
        state, batch = self.state, slot.batch
        state.__dict__.update(slot.after.__dict__)
        metrics.SINK_WRITES.inc(slot.written, sink=TABLE, outcome="success")
        if batch.rows > slot.written:
            metrics.SINK_WRITES.inc(batch.rows - slot.written, sink=TABLE, outcome="unchanged")
        if batch.rejected:
            metrics.SINK_WRITES.inc(batch.rejected, sink=TABLE, outcome="rejected")
        metrics.SINK_LATENCY.observe(slot.seconds, sink=TABLE)
        elapsed = time.monotonic() - self._started
        counts: dict[str, Any] = {
            "rows_read": state.rows_read,
            "rows_written": state.rows_written,
            "rows_unchanged": state.rows_read - state.rows_rejected - state.rows_written,
            "rows_rejected": state.rows_rejected,
            "rate": round((state.rows_read - self._read_at_start) / elapsed, 1) if elapsed > 0 else None,
            "batches": state.batches,
        }
        if self.progress is not None:
            self.progress.update(**counts)
        else:
            self.task.progress(
                **counts, line=state.line, bytes_read=self.opened.bytes_read, bytes_total=self.opened.size
            )

    def _ensure_partitions(self, batch: Batch) -> None:
        """Partitions for the days the batch's rows fall on (`Batch.slots`, one-day slots),
        and no others: a lone row far away makes one partition, not every one in between. Their width follows the
        batch's finest bar interval (`partitions.plan`): years of daily bars get yearly
        partitions. They are created together, a group per transaction, with the job's
        progress in phase "creating partitions". More new ones than
        BACKFILL_MAX_PARTITIONS_PER_BATCH fail the load before any is made."""
        missing = batch.slots - self._covered
        if not missing:
            return
        days = _days(missing)
        limit = self.params.max_partitions_per_batch
        created_before = self.partitions_created

        def progress(done: int, needed: int) -> None:
            fields = {"partitions_created": created_before + done, "partitions_needed": created_before + needed}
            if self.progress is not None:
                self.progress.update(phase="creating partitions", **fields)
            else:
                self.task.progress(phase="creating partitions", **fields)

        try:
            created = partitions.ensure_days(
                self.conn,
                TABLE,
                days,
                grain=bar_intervals.finest(batch.intervals),
                check=self.task.check,
                progress=progress,
                max_new=limit,
            )
        except partitions.TooManyPartitions as exc:
            raise BackfillError(
                f"batch {self.state.batches + 1} (lines up to {batch.end_line}) would create {exc.needed} partitions, "
                f"more than BACKFILL_MAX_PARTITIONS_PER_BATCH ({limit}): its rows spread over {exc.needed} "
                f"periods without one; check the times, or load with smaller batch_rows"
            ) from None
        except ValueError as exc:
            raise BackfillError(f"cannot make partitions for this batch: {exc}") from None
        self.partitions_created += created
        self._covered |= missing
        if self.progress is not None:
            self.progress.update(phase="loading")

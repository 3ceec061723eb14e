"""Runs one ledger job inside the worker: the function RQ calls (`execute(run_id)`).

claim (queued -> running) -> heartbeat thread -> KIND.run -> finish (success | failed |
cancelled) -> metrics and a Pulse event. The heartbeat thread also carries cancel
requests and timeouts into the job: it terminates the job's database sessions so a
long statement stops at once, and `ctx.check()` raises inside the job.
"""

from __future__ import annotations

import os
import socket
import threading
import time

import psycopg
import structlog

from app import config, db, logs, metrics
from app.jobs import ledger
from app.jobs.base import JobCancelled, JobContext, JobError, JobTimedOut

WORKER_ID = f"{socket.gethostname()}:{os.getpid()}"
PROGRESS_EVERY = 1.0  # seconds: a job's changed progress reaches the ledger at least this often
_settings: config.Settings | None = None


def settings() -> config.Settings:
    global _settings
    if _settings is None:
        _settings = config.load_settings()
    return _settings


def use_settings(value: config.Settings) -> None:
    """The worker entry point hands its settings over once at start."""
    global _settings
    _settings = value


def _terminate(conn: psycopg.Connection, session_name: str) -> int:
    """End every database session the job opened (they carry its application_name)."""
    return conn.execute(
        "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity WHERE application_name = %s",
        (session_name,),
    ).fetchone()[0]


class _Heartbeat(threading.Thread):
    """Writes heartbeat and progress; turns cancel requests and timeouts into stops."""

    def __init__(self, ctx: JobContext):
        super().__init__(name=f"heartbeat-{ctx.run_id}", daemon=True)
        self.ctx = ctx
        self.done = threading.Event()
        self.log = ctx.log  # bound to run_id and job: this thread does not share the job's context

    def run(self) -> None:
        s = self.ctx.settings
        conn = None
        tick = min(s.heartbeat_interval, PROGRESS_EVERY)
        last = time.monotonic()
        while not self.done.wait(tick):
            progress = self.ctx.take_progress()
            if progress is None and time.monotonic() - last < s.heartbeat_interval:
                continue  # progress is written at least every PROGRESS_EVERY s, liveness every heartbeat
            last = time.monotonic()
            try:
                if conn is None or conn.closed:
                    conn = db.connect(s, application_name="store-heartbeat", autocommit=True)
                state = ledger.heartbeat(conn, self.ctx.run_id, progress)
                reason = None
                if state and state[1]:
                    reason = "cancelled"
                elif time.monotonic() > self.ctx.deadline:
                    reason = "timeout"
                if reason and self.ctx.stop_reason is None:
                    self.ctx.request_stop(reason)
                    ended = _terminate(conn, self.ctx.session_name)
                    self.log.warning("stopping job", reason=reason, sessions_terminated=ended)
            except psycopg.Error as exc:
                self.log.warning("heartbeat failed", error=str(exc).splitlines()[0] if str(exc) else type(exc).__name__)
                if conn is not None:
                    conn.close()
                conn = None
        if conn is not None:
            conn.close()


_conn: psycopg.Connection | None = None
_current: JobContext | None = None  # the job this process is running (one at a time)


def interrupt(detail: str) -> bool:
    """Stop the running job at once (SIGINT: Ctrl-C in `make run`): it ends `cancelled` with
    `detail` as its error, and a backfill resumes from its checkpoint when triggered again.
    Safe to call from a signal handler: the database sessions are ended from a thread.
    False when no job is running."""
    ctx = _current
    if ctx is None or not ctx.request_stop("cancelled", detail):
        return False
    ctx.log.warning("stopping job", reason="interrupted", detail=detail)

    def terminate() -> None:
        try:
            with db.connect(ctx.settings, application_name="store-interrupt", autocommit=True, connect_timeout=2) as c:
                _terminate(c, ctx.session_name)
        except psycopg.Error as exc:
            ctx.log.warning("could not end the job's database sessions", error=str(exc).splitlines()[0][:200])

    threading.Thread(target=terminate, name="interrupt", daemon=True).start()
    return True


def _ledger_call(s: config.Settings, fn, *args, **kwargs):
    """Run a ledger function on this process's runner connection (kept between jobs: a new
    connection per claim cost milliseconds of enqueue-to-start), retrying once on a fresh
    connection if the old one broke (database restarted)."""
    global _conn
    for attempt in (1, 2):
        if _conn is None or _conn.closed or _conn.broken:
            _conn = db.connect(s, application_name="store-runner", autocommit=True)
        try:
            return fn(_conn, *args, **kwargs)
        except psycopg.OperationalError:
            _conn.close()
            if attempt == 2:
                raise


def _kinds():
    from app.jobs import KINDS

    return KINDS


def execute(run_id: str) -> None:
    """RQ entry point. Never raises: every outcome is written to the ledger."""
    s = settings()
    log = logs.get("worker")
    _ledger_call(s, ledger.bootstrap, s.database_url)
    row = _ledger_call(s, ledger.claim, run_id, WORKER_ID)
    if row is None:
        log.info("job not queued any more; skipping", run_id=run_id)
        return
    structlog.contextvars.bind_contextvars(run_id=run_id, job=row["job"], request_id=row["request_id"])
    try:
        _run_claimed(s, run_id, row)
    finally:
        structlog.contextvars.unbind_contextvars("run_id", "job", "request_id")


def _run_claimed(s: config.Settings, run_id: str, row: dict) -> None:
    global _current
    log = logs.get("worker").bind(run_id=run_id, job=row["job"])
    kind = _kinds().get(row["job"])
    ctx = JobContext(
        run_id=run_id, kind=row["job"], settings=s, log=log, deadline=time.monotonic() + float(row["timeout_s"])
    )
    _current = ctx
    started = time.monotonic()
    beat = _Heartbeat(ctx)
    beat.start()
    status, result, error = "failed", None, None
    try:
        if kind is None:
            raise JobError(f"unknown job kind {row['job']!r}")
        log.info("job started", params=row["params"])
        result = kind.run(ctx, row["params"]) or {}
        ctx.check()
        status = "success"
    except Exception as exc:  # noqa: BLE001 - every failure must reach the ledger
        status, error = _outcome(ctx, exc, float(row["timeout_s"]))
        if not isinstance(exc, (JobCancelled, JobTimedOut, JobError)) and ctx.stop_reason is None:
            log.exception("job crashed")
    finally:
        _current = None
        beat.done.set()
        beat.join(timeout=5)
    duration = time.monotonic() - started
    recorded = _ledger_call(
        s, ledger.finish, run_id, status, result=result, error=error, progress=ctx.snapshot_progress()
    )
    log.info("job finished", status=status, error=error, duration_s=round(duration, 3), recorded=recorded)
    if (row["params"] or {}).get("parent"):  # the last child to end ends its parent
        from app.jobs import fanout

        _ledger_call(s, fanout.settle, row["params"]["parent"])
    metrics.JOBS_FINISHED.inc(kind=row["job"], status=status)
    metrics.JOB_DURATION.observe(duration, kind=row["job"])
    _publish_end(s, run_id, row["job"], status, duration, error)


def _outcome(ctx: JobContext, exc: BaseException, timeout_s: float) -> tuple[str, str]:
    reason = ctx.stop_reason
    if isinstance(exc, JobCancelled) or reason == "cancelled":
        return "cancelled", ctx.stop_detail or "cancelled on request"
    if isinstance(exc, JobTimedOut) or reason == "timeout":
        return "failed", f"timed out after {timeout_s:g} s; its database sessions were terminated"
    if isinstance(exc, JobError):
        return "failed", str(exc)
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
    return "failed", f"{type(exc).__name__}: {text}" if text else type(exc).__name__


def _publish_end(s: config.Settings, run_id: str, job: str, status: str, duration: float, error: str | None) -> None:
    try:
        from app import pulse
    except ImportError:
        return
    pulse.publish_job_end(s, run_id=run_id, job=job, status=status, duration_s=duration, error=error)

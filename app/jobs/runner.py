"""Runs ledger jobs inside the worker process: `Runner.execute(run_id)`.

claim (queued -> running) -> heartbeat thread -> KIND.run -> finish (success | failed |
cancelled) -> metrics and a Pulse event. The heartbeat thread also carries cancel
requests and timeouts into the job: it terminates the job's database sessions so a
long statement stops at once, and `ctx.check()` raises inside the job.

RQ hands the worker only a run id. The worker's main creates one `Runner` with its
resources and gives RQ `job_class(runner)`, whose jobs call that runner: no settings or
connections live in module globals.
"""

from __future__ import annotations

import os
import socket
import threading
import time
from collections.abc import Callable
from functools import partial
from typing import Any, TypeVar

import psycopg
import structlog
from rq.job import Job

from app import db, logs, metrics, pulse, retry
from app.errors import first_line
from app.jobs import ledger
from app.jobs.base import JobCancelled, JobContext, JobError, JobKind, JobTimedOut
from app.jobs.ledger import JobStatus
from app.resources import Resources

WORKER_ID = f"{socket.gethostname()}:{os.getpid()}"
PROGRESS_EVERY = 1.0  # seconds: a job's changed progress reaches the ledger at least this often
T = TypeVar("T")


def _terminate(conn: psycopg.Connection, session_name: str) -> int:
    """End every database session the job opened (they carry its application_name)."""
    row = conn.execute(
        "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity WHERE application_name = %s",
        (session_name,),
    ).fetchone()
    return int(row[0]) if row else 0


STOP_POLL = 1.0  # seconds between two looks for a cancel request (a heartbeat is one too)
FINISH_RETRY_FOR = 900.0  # seconds a finished job's outcome is retried while the database is away


class _Heartbeat(threading.Thread):
    """Writes heartbeat and progress every JOB_HEARTBEAT_SECONDS, looks for a cancel
    request every STOP_POLL seconds, and turns cancel requests and timeouts into stops."""

    def __init__(self, ctx: JobContext):
        super().__init__(name=f"heartbeat-{ctx.run_id}", daemon=True)
        self.ctx = ctx
        self.done = threading.Event()
        self.log = ctx.log  # bound to run_id and job: this thread does not share the job's context

    def run(self) -> None:
        s = self.ctx.settings
        conn = None
        tick = min(STOP_POLL, s.heartbeat_interval, PROGRESS_EVERY)
        next_beat = time.monotonic() + s.heartbeat_interval
        next_progress = time.monotonic() + PROGRESS_EVERY
        while not self.done.wait(tick):
            try:
                if conn is None or conn.closed:
                    conn = db.connect(s, application_name="store-heartbeat", autocommit=True)
                now = time.monotonic()
                progress = self.ctx.take_progress() if now >= next_progress or now >= next_beat else None
                if now >= next_beat or progress is not None:  # changed progress: at least every PROGRESS_EVERY s
                    state = ledger.heartbeat(conn, self.ctx.run_id, progress)
                    next_beat = now + s.heartbeat_interval
                    next_progress = now + PROGRESS_EVERY
                else:
                    state = ledger.stop_requested(conn, self.ctx.run_id)
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
                self.log.warning("heartbeat failed", error=first_line(exc))
                if conn is not None:
                    conn.close()
                conn = None
        if conn is not None:
            conn.close()


class Runner:
    """Runs the jobs this worker process takes from the queue, one at a time."""

    def __init__(self, resources: Resources, kinds: dict[str, JobKind]):
        self.resources = resources
        self.settings = resources.settings
        self.kinds = kinds
        self._conn: psycopg.Connection | None = None  # kept between jobs (claims stay fast)
        self.current: JobContext | None = None  # the job running now (one at a time)

    def interrupt(self, detail: str) -> bool:
        """Stop the running job at once (SIGINT: Ctrl-C in `make run`): it ends `cancelled`
        with `detail` as its error, and a backfill resumes from its checkpoint when triggered
        again. Safe to call from a signal handler: the database sessions are ended from a
        thread. False when no job is running."""
        ctx = self.current
        if ctx is None or not ctx.request_stop("cancelled", detail):
            return False
        ctx.log.warning("stopping job", reason="interrupted", detail=detail)

        def terminate() -> None:
            try:
                with db.connect(
                    ctx.settings, application_name="store-interrupt", autocommit=True, connect_timeout=2
                ) as conn:
                    _terminate(conn, ctx.session_name)
            except psycopg.Error as exc:
                ctx.log.warning("could not end the job's database sessions", error=first_line(exc, 200))

        threading.Thread(target=terminate, name="interrupt", daemon=True).start()
        return True

    def _ledger_call(self, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        """Run a ledger function on the runner's connection, once more on a fresh
        connection if the old one broke (database restarted)."""

        def call() -> T:
            if self._conn is None or self._conn.closed or self._conn.broken:
                self._conn = db.connect(self.settings, application_name="store-runner", autocommit=True)
            return fn(self._conn, *args, **kwargs)

        def reconnect(_attempt: int, _exc: BaseException, _pause: float) -> None:
            if self._conn is not None:
                self._conn.close()

        return retry.call(call, on=psycopg.OperationalError, attempts=2, before_pause=reconnect)

    def execute(self, run_id: str) -> None:
        """Run one ledger job. Never raises: every outcome is written to the ledger."""
        log = logs.get("worker")
        row = self._ledger_call(ledger.claim, run_id, WORKER_ID)
        if row is None:
            log.info("job not queued any more; skipping", run_id=run_id)
            return
        structlog.contextvars.bind_contextvars(run_id=run_id, job=row["job"], request_id=row["request_id"])
        try:
            self._run_claimed(run_id, row)
        finally:
            structlog.contextvars.unbind_contextvars("run_id", "job", "request_id")

    def _run_claimed(self, run_id: str, row: dict) -> None:
        log = logs.get("worker").bind(run_id=run_id, job=row["job"])
        kind = self.kinds.get(row["job"])
        timeout_s = float(row["timeout_s"])
        ctx = JobContext(
            run_id=run_id,
            kind=row["job"],
            settings=self.settings,
            log=log,
            deadline=time.monotonic() + timeout_s,
            timeout_s=timeout_s,
            redis=self.resources.queue.client(),
        )
        self.current = ctx
        started = time.monotonic()
        beat = _Heartbeat(ctx)
        beat.start()
        status, result, error = JobStatus.FAILED, None, None
        try:
            if kind is None:
                raise JobError(f"unknown job kind {row['job']!r}")
            log.info("job started", params=row["params"])
            result = kind.run(ctx, row["params"]) or {}
            ctx.check()
            status = JobStatus.SUCCESS
        except Exception as exc:  # every failure must reach the ledger
            status, error = ctx.outcome(exc)
            if not isinstance(exc, (JobCancelled, JobTimedOut, JobError)) and ctx.stop_reason is None:
                log.exception("job crashed")
        finally:
            self.current = None
            beat.done.set()
            beat.join(timeout=5)
        duration = time.monotonic() - started
        recorded = self._finish(run_id, status, result, error, ctx.snapshot_progress(), log)
        log.info("job finished", status=status, error=error, duration_s=round(duration, 3), recorded=recorded)
        if (row["params"] or {}).get("parent"):  # the last child to end ends its parent
            from app.jobs import fanout

            self._ledger_call(fanout.settle, row["params"]["parent"])
        metrics.JOBS_FINISHED.inc(kind=row["job"], status=status)
        metrics.JOB_DURATION.observe(duration, kind=row["job"])
        pulse.publish_job_end(
            self.settings,
            run_id=run_id,
            job=row["job"],
            status=status,
            duration_s=duration,
            error=error,
            redis=self.resources.queue.client(),
        )

    def _finish(
        self, run_id: str, status: str, result: dict | None, error: str | None, progress: dict, log: Any
    ) -> bool:
        """Record the outcome, retrying while the database is away (an outage must end as
        the job's own error, not as 'worker lost'); the reaper's 'worker lost' is
        overwritten by the worker that was alive all along."""

        def before_pause(_attempt: int, exc: BaseException, pause: float) -> None:
            log.warning(
                "cannot record the job's outcome yet; retrying",
                status=status,
                error=first_line(exc),
                retry_in_s=round(pause, 2),
            )

        return retry.call(
            partial(
                self._ledger_call,
                ledger.finish,
                run_id,
                status,
                result=result,
                error=error,
                progress=progress,
                worker=WORKER_ID,
            ),
            on=psycopg.OperationalError,
            within=FINISH_RETRY_FOR,
            first_pause=0.5,
            max_pause=5.0,
            before_pause=before_pause,
        )

    def close(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None


def job_class(runner: Runner) -> type[Job]:
    """The RQ job class of a worker: each job hands its run id to `runner`."""

    class RunnerJob(Job):
        def _execute(self) -> None:
            runner.execute(*self.args)

    return RunnerJob


def execute(run_id: str) -> None:
    """The function name RQ records (app.queue.RUNNER). Jobs run through `job_class`;
    reaching this means a worker without a runner took the job."""
    raise RuntimeError("store jobs run in `python -m worker`, whose job class hands them to its runner")

"""What a job kind is, and what a running job can use (`JobContext`).

A job kind is a module in `app/jobs/` that defines `KIND = JobKind(...)`:

- `parse(body, settings) -> params`: validate the trigger's JSON body in the API, before
  anything is recorded; raise `app.errors.BadRequest` / `NotFound` naming the field.
- `run(ctx, params) -> result`: runs in the worker; returns a JSON-serialisable dict.
  Raise `JobError("...")` for an expected failure (its message becomes the job's error).
- `single_flight(params) -> key | None`: jobs with the same key never run at once; a
  trigger while one is queued or running answers with that run's id.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import psycopg
import redis

from app import db
from app.config import Settings
from app.errors import BadRequest, first_line
from app.jobs.ledger import JobStatus


class JobError(Exception):
    """An expected failure; the message is shown to the user as the job's `error`."""


class JobCancelled(Exception):
    """Raised inside a job when a cancel was requested."""


class JobTimedOut(Exception):
    """Raised inside a job when it ran past its timeout."""


def outcome(
    exc: BaseException, stop_reason: str | None, timeout_s: float, stop_detail: str | None = None
) -> tuple[JobStatus, str]:
    """The final status and error of a job that raised `exc` (the one place this is decided).

    A cancel or timeout wins over whatever error the stop caused inside the job (a
    terminated session shows up as a database error)."""
    if isinstance(exc, JobCancelled) or stop_reason == "cancelled":
        return JobStatus.CANCELLED, stop_detail or "cancelled on request"
    if isinstance(exc, JobTimedOut) or stop_reason == "timeout":
        return JobStatus.FAILED, f"timed out after {timeout_s:g} s; its database sessions were terminated"
    if isinstance(exc, JobError):
        return JobStatus.FAILED, str(exc)
    text = first_line(exc)
    return JobStatus.FAILED, f"{type(exc).__name__}: {text}" if str(exc).strip() else text


LOCK_ERRORS = (psycopg.errors.LockNotAvailable, psycopg.errors.DeadlockDetected)


def gave_up_on_locks(exc: BaseException) -> str:
    """What a job reports for a step that still lost its lock race after the retries."""
    return f"gave up waiting for locks: {first_line(exc)}"


@contextmanager
def locks_or_job_error(what: str) -> Iterator[None]:
    """Inside: a lock timeout or deadlock that outlasted the retries fails the job,
    the error naming `what`."""
    try:
        yield
    except LOCK_ERRORS as exc:
        raise JobError(f"{what} {gave_up_on_locks(exc)}") from None


def no_params(body: dict, settings: Settings) -> dict:
    """`parse` of a kind that takes no parameters."""
    if body:
        raise BadRequest(f"this job takes no parameters, got: {', '.join(sorted(body))}")
    return {}


def _no_key(params: dict) -> str | None:
    return None


@dataclass(frozen=True)
class JobKind:
    name: str
    run: Callable[[JobContext, dict], dict]
    parse: Callable[[dict, Settings], dict] = no_params
    single_flight: Callable[[dict], str | None] = _no_key
    timeout_s: float | None = None  # None: the configured JOB_TIMEOUT_SECONDS
    description: str = ""


@dataclass
class JobContext:
    """Handed to `JobKind.run`. Thread-safe where it matters (the heartbeat thread reads it)."""

    run_id: str
    kind: str
    settings: Settings
    log: Any
    deadline: float  # time.monotonic() after which the job is past its timeout
    timeout_s: float = 0.0  # the limit the deadline came from (for messages)
    redis: redis.Redis | None = None  # the worker's client (Pulse events); None: one of its own
    _progress: dict = field(default_factory=dict)
    _progress_dirty: bool = False
    _stop: str | None = None  # 'cancelled' | 'timeout'
    stop_detail: str | None = None  # why it was cancelled, when not on request (the worker was interrupted)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    # -- database ---------------------------------------------------------------------
    @property
    def session_name(self) -> str:
        """`application_name` of every session this job opens; cancel/timeout terminates them."""
        return f"store-job:{self.run_id}"

    @contextmanager
    def connect(self, autocommit: bool = False, **kw: Any) -> Iterator[psycopg.Connection]:
        """A dedicated connection for this job, with the store's safety timeouts.

        A maintenance session (`app.maintenance = on`): jobs see every tenant's rows.
        """
        self.check()
        kw.setdefault("maintenance", True)
        conn = db.connect(self.settings, application_name=self.session_name, autocommit=autocommit, **kw)
        try:
            yield conn
        except psycopg.Error:
            self.check()  # a session we terminated shows up here: report why
            raise
        finally:
            conn.close()

    # -- progress and cancellation -------------------------------------------------------
    def progress(self, **fields: Any) -> None:
        """Merge fields into the job's `progress`; the heartbeat writes it to the ledger."""
        with self._lock:
            self._progress.update(fields)
            self._progress_dirty = True

    def take_progress(self) -> dict | None:
        with self._lock:
            if not self._progress_dirty:
                return None
            self._progress_dirty = False
            return dict(self._progress)

    def snapshot_progress(self) -> dict:
        with self._lock:
            return dict(self._progress)

    def request_stop(self, reason: str, detail: str | None = None) -> bool:
        """Mark the job stopping ('cancelled' or 'timeout'); False if it already was."""
        with self._lock:
            if self._stop is None:
                self._stop, self.stop_detail = reason, detail
                return True
            return False

    @property
    def stop_reason(self) -> str | None:
        return self._stop

    def outcome(self, exc: BaseException) -> tuple[JobStatus, str]:
        """The final status and error if the job ends with `exc` now."""
        return outcome(exc, self.stop_reason, self.timeout_s, self.stop_detail)

    def check(self) -> None:
        """Raise if the job was cancelled or is past its deadline. Call between steps."""
        if self._stop is None and time.monotonic() > self.deadline:
            self._stop = "timeout"
        if self._stop == "cancelled":
            raise JobCancelled("cancelled on request")
        if self._stop == "timeout":
            raise JobTimedOut("job exceeded its timeout")

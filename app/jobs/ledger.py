"""The job ledger (`store_jobs`): all SQL about job records lives here.

Postgres is the source of truth for every job. Redis only carries run ids to workers;
if it loses them, `reaper` re-enqueues from here.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum

import psycopg
from psycopg.rows import dict_row
from psycopg.types.json import Jsonb

from app.config import PROJECT_ROOT
from app.db import scalar
from app.times import iso


class JobStatus(StrEnum):
    """A job's status in the ledger (and in the API's job documents)."""

    QUEUED = "queued"
    RUNNING = "running"
    SUCCESS = "success"
    FAILED = "failed"
    CANCELLED = "cancelled"


STATUSES = tuple(JobStatus)
ACTIVE = (JobStatus.QUEUED, JobStatus.RUNNING)
# The ledger's migrations, executed in this order by `bootstrap` (each is idempotent).
LEDGER_SQL = (
    PROJECT_ROOT / "migrations" / "0001_job_ledger.sql",
    PROJECT_ROOT / "migrations" / "0030_jobs_retry_schedules.sql",
)
_BOOTSTRAP_LOCK_KEY = 0x5354_4F52_4500  # pg advisory lock key: serialises concurrent bootstraps

_COLUMNS = """run_id::text AS run_id, job, status, params, progress, result, error, request_id,
    trigger, requested_at, started_at, finished_at, heartbeat_at, cancel_requested_at, worker, attempts,
    retry_of::text AS retry_of, timeout_s, now() AS now"""


def bootstrap(conn: psycopg.Connection) -> None:
    """Create the ledger tables if missing (idempotent; the same SQL as migrations 0001 and 0030).

    Called once at process start: by the worker's main, and by the API's sweeper when
    gunicorn starts it (app/jobs/reaper.py)."""
    with conn.transaction():
        conn.execute("SELECT pg_advisory_xact_lock(%s)", (_BOOTSTRAP_LOCK_KEY,))
        found = conn.execute(
            """SELECT EXISTS (SELECT 1 FROM pg_attribute
                              WHERE attrelid = to_regclass('store_schedules') AND attname = 'paused')
                      AND EXISTS (SELECT 1 FROM pg_attribute
                                  WHERE attrelid = to_regclass('store_jobs') AND attname = 'retry_of')"""
        ).fetchone()
        if not (found and found[0]):
            for path in LEDGER_SQL:
                conn.execute(path.read_text())


def document(row: dict) -> dict:
    """The job status document served by GET /jobs/<run_id>.

    `duration_s`: finished - started, or so far for a running job (null before it started).
    `queue_position` / `waiting_for` are null here; the API fills them in for queued jobs.
    """
    started, finished = row["started_at"], row["finished_at"]
    duration = None
    if started is not None:
        duration = round(max(((finished or row["now"]) - started).total_seconds(), 0.0), 3)
    return {
        "run_id": row["run_id"],
        "job": row["job"],
        "status": row["status"],
        "params": row["params"],
        "progress": row["progress"],
        "result": row["result"],
        "error": row["error"],
        "requested_at": iso(row["requested_at"]),
        "started_at": iso(started),
        "finished_at": iso(finished),
        "duration_s": duration,
        "trigger": row["trigger"],
        "request_id": row["request_id"],
        "cancel_requested": row["cancel_requested_at"] is not None,
        "attempts": row["attempts"],
        "retry_of": row["retry_of"],
        "queue_position": None,
        "waiting_for": None,
    }


def create(
    conn: psycopg.Connection,
    job: str,
    params: dict,
    *,
    request_id: str | None,
    single_flight_key: str | None,
    timeout_s: float,
    trigger: str = "api",
    retry_of: str | None = None,
) -> tuple[str, bool]:
    """Insert a queued job. Returns (run_id, created); with a single-flight key already
    active, nothing is inserted and the active run's id comes back with created=False."""
    while True:
        row = conn.execute(
            """INSERT INTO store_jobs (run_id, job, params, request_id, single_flight_key, timeout_s, trigger, retry_of)
               VALUES (%s, %s, %s, %s, %s, %s, %s, %s)
               ON CONFLICT (single_flight_key) WHERE status IN ('queued', 'running') DO NOTHING
               RETURNING run_id::text""",
            (uuid.uuid4(), job, Jsonb(params), request_id, single_flight_key, timeout_s, trigger, retry_of),
        ).fetchone()
        if row:
            return row[0], True
        active = conn.execute(
            "SELECT run_id::text FROM store_jobs WHERE single_flight_key = %s AND status IN ('queued', 'running')",
            (single_flight_key,),
        ).fetchone()
        if active:  # else it finished between the two statements: try again
            return active[0], False


def queued_count(conn: psycopg.Connection) -> int:
    row = conn.execute("SELECT count(*) FROM store_jobs WHERE status = 'queued'").fetchone()
    return int(row[0]) if row else 0


def active_run(conn: psycopg.Connection, single_flight_key: str) -> str | None:
    row = conn.execute(
        "SELECT run_id::text FROM store_jobs WHERE single_flight_key = %s AND status IN ('queued', 'running')",
        (single_flight_key,),
    ).fetchone()
    return row[0] if row else None


def get(conn: psycopg.Connection, run_id: str) -> dict | None:
    with conn.cursor(row_factory=dict_row) as cur:
        return cur.execute(f"SELECT {_COLUMNS} FROM store_jobs WHERE run_id = %s", (run_id,)).fetchone()


@dataclass(frozen=True)
class JobFilter:
    """What GET /jobs asks for. `kinds`: exact job kinds (None: any); `after`: the cursor,
    the (requested_at, run_id) of the last job of the previous page."""

    kinds: tuple[str, ...] | None = None
    statuses: tuple[str, ...] | None = None
    since: datetime | None = None
    until: datetime | None = None
    trigger: str | None = None
    after: tuple[datetime, str] | None = None
    parent: str | None = None  # child runs of this parent run (app/jobs/fanout.py)


def list_jobs(conn: psycopg.Connection, where: JobFilter, limit: int) -> tuple[list[dict], int]:
    """One page of jobs, newest first, and how many match in all (ignoring the cursor).

    Keyset paging on (requested_at, run_id): a job inserted while a client pages is either
    newer than the first page or lands in a later one; none is returned twice or skipped."""
    params = {
        "kinds": list(where.kinds) if where.kinds is not None else None,
        "statuses": list(where.statuses) if where.statuses is not None else None,
        "since": where.since,
        "until": where.until,
        "trigger": where.trigger,
        "after_at": where.after[0] if where.after else None,
        "after_id": where.after[1] if where.after else None,
        "parent": where.parent,
        "limit": limit,
    }
    match = """(%(kinds)s::text[] IS NULL OR job = ANY(%(kinds)s))
               AND (%(statuses)s::text[] IS NULL OR status = ANY(%(statuses)s))
               AND (%(since)s::timestamptz IS NULL OR requested_at >= %(since)s)
               AND (%(until)s::timestamptz IS NULL OR requested_at < %(until)s)
               AND (%(trigger)s::text IS NULL OR trigger = %(trigger)s)
               AND (%(parent)s::text IS NULL OR (params ? 'parent' AND params->>'parent' = %(parent)s))"""
    with conn.cursor(row_factory=dict_row) as cur:
        with conn.transaction():  # one snapshot: the page and the total agree
            conn.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ")
            rows = cur.execute(
                f"""SELECT {_COLUMNS} FROM store_jobs WHERE {match}
                    AND (%(after_at)s::timestamptz IS NULL OR (requested_at, run_id) < (%(after_at)s, %(after_id)s::uuid))
                    ORDER BY requested_at DESC, run_id DESC LIMIT %(limit)s""",
                params,
            ).fetchall()
            counted = conn.execute(f"SELECT count(*) FROM store_jobs WHERE {match}", params).fetchone()
    return rows, counted[0] if counted else 0


def queue_order(conn: psycopg.Connection, limit: int = 1000) -> tuple[list[str], list[str]]:
    """(running run ids, queued run ids in the order workers take them), at most `limit` each."""
    rows = conn.execute(
        """(SELECT 'running', run_id::text FROM store_jobs WHERE status = 'running' ORDER BY started_at LIMIT %(n)s)
           UNION ALL
           (SELECT 'queued', run_id::text FROM store_jobs WHERE status = 'queued'
            ORDER BY COALESCE(enqueued_at, requested_at), requested_at, run_id LIMIT %(n)s)""",
        {"n": limit},
    ).fetchall()
    return [r[1] for r in rows if r[0] == JobStatus.RUNNING], [r[1] for r in rows if r[0] == JobStatus.QUEUED]


def mark_enqueued(conn: psycopg.Connection, run_id: str) -> None:
    conn.execute("UPDATE store_jobs SET enqueued_at = now() WHERE run_id = %s", (run_id,))


def claim(conn: psycopg.Connection, run_id: str, worker: str) -> dict | None:
    """queued -> running, atomically. None if the job is not queued (cancelled, already run)."""
    with conn.cursor(row_factory=dict_row) as cur:
        return cur.execute(
            """UPDATE store_jobs SET status = 'running', started_at = now(), heartbeat_at = now(),
                      worker = %s, attempts = attempts + 1
               WHERE run_id = %s AND status = 'queued'
               RETURNING run_id::text AS run_id, job, params, request_id, timeout_s""",
            (worker, run_id),
        ).fetchone()


def heartbeat(conn: psycopg.Connection, run_id: str, progress: dict | None) -> tuple[str, bool] | None:
    """Record liveness (and progress). Returns (status, cancel_requested)."""
    row = conn.execute(
        """UPDATE store_jobs SET heartbeat_at = now(), progress = COALESCE(%s, progress)
           WHERE run_id = %s RETURNING status, cancel_requested_at IS NOT NULL""",
        (Jsonb(progress) if progress is not None else None, run_id),
    ).fetchone()
    return (row[0], row[1]) if row else None


def stop_requested(conn: psycopg.Connection, run_id: str) -> tuple[str, bool] | None:
    """(status, cancel_requested) without writing anything (between two heartbeats)."""
    row = conn.execute(
        "SELECT status, cancel_requested_at IS NOT NULL FROM store_jobs WHERE run_id = %s", (run_id,)
    ).fetchone()
    return (row[0], row[1]) if row else None


LOST_PREFIX = "worker lost:"


def finish(
    conn: psycopg.Connection,
    run_id: str,
    status: str,
    *,
    result: dict | None,
    error: str | None,
    progress: dict,
    worker: str | None = None,
) -> bool:
    """running -> final status. False if someone else ended it first (a cancel of a queued
    job). `worker`: the worker that ran it, whose own outcome replaces a 'worker lost'
    verdict the reaper gave while the database kept its heartbeats out."""
    row = conn.execute(
        """UPDATE store_jobs SET status = %s, result = %s, error = %s, progress = %s,
                  finished_at = now()
           WHERE run_id = %s
             AND (status = 'running'
                  OR (status = 'failed' AND worker = %s AND starts_with(error, %s)))
           RETURNING 1""",
        (status, Jsonb(result) if result is not None else None, error, Jsonb(progress), run_id, worker, LOST_PREFIX),
    ).fetchone()
    return row is not None


def request_cancel(conn: psycopg.Connection, run_id: str) -> str | None:
    """Cancel a job. Returns the status it had ('queued' -> now cancelled, 'running' ->
    cancel requested), the final status it already had, or None if unknown."""
    row = conn.execute(
        """WITH before AS (SELECT status FROM store_jobs WHERE run_id = %(id)s FOR UPDATE)
           UPDATE store_jobs j SET
               status = CASE WHEN b.status = 'queued' THEN 'cancelled' ELSE j.status END,
               finished_at = CASE WHEN b.status = 'queued' THEN now() ELSE j.finished_at END,
               error = CASE WHEN b.status = 'queued' THEN 'cancelled before it started' ELSE j.error END,
               cancel_requested_at = CASE WHEN b.status IN ('queued', 'running') THEN now()
                                          ELSE j.cancel_requested_at END
           FROM before b WHERE j.run_id = %(id)s
           RETURNING b.status""",
        {"id": run_id},
    ).fetchone()
    return row[0] if row else None


def fail_lost(conn: psycopg.Connection, lost_after_s: float) -> list[dict]:
    """Running jobs whose heartbeat stopped: the worker died. Mark them failed."""
    with conn.cursor(row_factory=dict_row) as cur:
        return cur.execute(
            """UPDATE store_jobs SET status = 'failed', finished_at = now(),
                      error = 'worker lost: no heartbeat from ' || COALESCE(worker, 'the worker') ||
                              ' since ' || to_char(heartbeat_at AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS"Z"') ||
                              ' (killed or out of memory?)'
               WHERE status = 'running' AND heartbeat_at < now() - make_interval(secs => %s)
               RETURNING run_id::text AS run_id, job, worker, started_at""",
            (lost_after_s,),
        ).fetchall()


def active_counts(conn: psycopg.Connection) -> tuple[list[tuple[str, str, int]], float]:
    """[(job, status, count)] of queued and running jobs, and how many seconds the oldest
    queued job has waited (0 when none waits; nothing before the ledger exists)."""
    if not scalar(conn, "SELECT to_regclass('store_jobs') IS NOT NULL"):
        return [], 0.0
    rows = conn.execute(
        """SELECT job, status, count(*), EXTRACT(EPOCH FROM now() - min(requested_at))
           FROM store_jobs WHERE status IN ('queued', 'running') GROUP BY job, status"""
    ).fetchall()
    oldest = max((float(age or 0) for _job, status, _n, age in rows if status == JobStatus.QUEUED), default=0.0)
    return [(job, status, int(count)) for job, status, count, _age in rows], oldest


def queued_before(conn: psycopg.Connection, age_s: float) -> list[dict]:
    """Queued jobs enqueued (or created) more than age_s seconds ago."""
    with conn.cursor(row_factory=dict_row) as cur:
        return cur.execute(
            """SELECT run_id::text AS run_id, job, timeout_s FROM store_jobs
               WHERE status = 'queued' AND COALESCE(enqueued_at, requested_at) < now() - make_interval(secs => %s)
               ORDER BY requested_at LIMIT 500""",
            (age_s,),
        ).fetchall()

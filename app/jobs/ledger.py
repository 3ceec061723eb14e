"""The job ledger (`store_jobs`): all SQL about job records lives here.

Postgres is the source of truth for every job. Redis only carries run ids to workers;
if it loses them, `reaper` re-enqueues from here.
"""

from __future__ import annotations

import threading
import uuid
from datetime import datetime

import psycopg
from psycopg.rows import dict_row
from psycopg.types.json import Jsonb

from app.config import PROJECT_ROOT

STATUSES = ("queued", "running", "success", "failed", "cancelled")
ACTIVE = ("queued", "running")
LEDGER_SQL = PROJECT_ROOT / "migrations" / "0001_job_ledger.sql"
_BOOTSTRAP_LOCK_KEY = 0x5354_4F52_4500  # pg advisory lock key: serialises concurrent bootstraps

_bootstrapped: set[str] = set()
_bootstrap_lock = threading.Lock()

_COLUMNS = """run_id::text AS run_id, job, status, params, progress, result, error, request_id,
    trigger, requested_at, started_at, finished_at, heartbeat_at, cancel_requested_at, worker, attempts"""


def bootstrap(conn: psycopg.Connection, key: str = "") -> None:
    """Create the ledger tables if missing (idempotent; the same SQL as migration 0001)."""
    if key and key in _bootstrapped:
        return
    with _bootstrap_lock:
        sql = LEDGER_SQL.read_text()
        with conn.transaction():
            conn.execute("SELECT pg_advisory_xact_lock(%s)", (_BOOTSTRAP_LOCK_KEY,))
            exists = conn.execute("SELECT to_regclass('store_schedules') IS NOT NULL").fetchone()[0]
            if not exists:
                conn.execute(sql)
        if key:
            _bootstrapped.add(key)


def _iso(value: datetime | None) -> str | None:
    return value.isoformat() if value else None


def document(row: dict) -> dict:
    """The job status document served by GET /jobs/<run_id>."""
    return {
        "run_id": row["run_id"],
        "job": row["job"],
        "status": row["status"],
        "params": row["params"],
        "progress": row["progress"],
        "result": row["result"],
        "error": row["error"],
        "requested_at": _iso(row["requested_at"]),
        "started_at": _iso(row["started_at"]),
        "finished_at": _iso(row["finished_at"]),
        "trigger": row["trigger"],
        "request_id": row["request_id"],
        "cancel_requested": row["cancel_requested_at"] is not None,
        "attempts": row["attempts"],
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
) -> tuple[str, bool]:
    """Insert a queued job. Returns (run_id, created); with a single-flight key already
    active, nothing is inserted and the active run's id comes back with created=False."""
    while True:
        row = conn.execute(
            """INSERT INTO store_jobs (run_id, job, params, request_id, single_flight_key, timeout_s, trigger)
               VALUES (%s, %s, %s, %s, %s, %s, %s)
               ON CONFLICT (single_flight_key) WHERE status IN ('queued', 'running') DO NOTHING
               RETURNING run_id::text""",
            (uuid.uuid4(), job, Jsonb(params), request_id, single_flight_key, timeout_s, trigger),
        ).fetchone()
        if row:
            return row[0], True
        active = conn.execute(
            "SELECT run_id::text FROM store_jobs WHERE single_flight_key = %s AND status IN ('queued', 'running')",
            (single_flight_key,),
        ).fetchone()
        if active:  # else it finished between the two statements: try again
            return active[0], False


def get(conn: psycopg.Connection, run_id: str) -> dict | None:
    with conn.cursor(row_factory=dict_row) as cur:
        return cur.execute(f"SELECT {_COLUMNS} FROM store_jobs WHERE run_id = %s", (run_id,)).fetchone()


def list_jobs(
    conn: psycopg.Connection, job: str | None, status: str | None, limit: int, parent: str | None = None
) -> list[dict]:
    with conn.cursor(row_factory=dict_row) as cur:
        return cur.execute(
            f"""SELECT {_COLUMNS} FROM store_jobs
                WHERE (%(job)s::text IS NULL OR job = %(job)s) AND (%(status)s::text IS NULL OR status = %(status)s)
                  AND (%(parent)s::text IS NULL OR (params ? 'parent' AND params->>'parent' = %(parent)s))
                ORDER BY requested_at DESC, run_id LIMIT %(limit)s""",
            {"job": job, "status": status, "limit": limit, "parent": parent},
        ).fetchall()


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


def finish(
    conn: psycopg.Connection, run_id: str, status: str, *, result: dict | None, error: str | None, progress: dict
) -> bool:
    """running -> final status. False if someone else ended it first (the reaper)."""
    row = conn.execute(
        """UPDATE store_jobs SET status = %s, result = %s, error = %s, progress = %s, finished_at = now()
           WHERE run_id = %s AND status = 'running' RETURNING 1""",
        (status, Jsonb(result) if result is not None else None, error, Jsonb(progress), run_id),
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


def queued_before(conn: psycopg.Connection, age_s: float) -> list[dict]:
    """Queued jobs enqueued (or created) more than age_s seconds ago."""
    with conn.cursor(row_factory=dict_row) as cur:
        return cur.execute(
            """SELECT run_id::text AS run_id, job, timeout_s FROM store_jobs
               WHERE status = 'queued' AND COALESCE(enqueued_at, requested_at) < now() - make_interval(secs => %s)
               ORDER BY requested_at LIMIT 500""",
            (age_s,),
        ).fetchall()

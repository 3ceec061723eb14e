"""The platform's `job_runs` audit row of a backfill (mode 'backfill').

One row per run: inserted as 'running', refreshed with counts and
`metadata.last_heartbeat` while it runs (inside each batch's transaction and while it
waits on a slow source), closed as 'success', 'failure' or 'cancelled'.
"""

from __future__ import annotations

from enum import StrEnum

import psycopg
from psycopg.types.json import Jsonb

from app.backfill.checkpoints import State
from app.backfill.task import Task
from app.config import SERVICE, VERSION
from app.db import scalar
from app.errors import first_line

PIPELINE_VERSION = f"{SERVICE} {VERSION}"


class RunStatus(StrEnum):
    """`job_runs.status`, the platform's audit vocabulary (not the job ledger's)."""

    RUNNING = "running"
    SUCCESS = "success"
    FAILURE = "failure"
    CANCELLED = "cancelled"


def _provider(state: State, default: str | None) -> str | None:
    if len(state.providers) == 1:
        return next(iter(state.providers))
    return default if not state.providers else None


def start(
    conn: psycopg.Connection,
    *,
    job_name: str,
    dataset: str,
    provider: str | None,
    fingerprint: str,
    metadata: dict,
) -> int:
    return scalar(
        conn,
        """INSERT INTO job_runs (job_name, dataset_name, provider, mode, status, config_fingerprint,
                                 pipeline_version, metadata)
           VALUES (%s, %s, %s, 'backfill', 'running', %s, %s,
                   %s || jsonb_build_object('last_heartbeat', now()))
           RETURNING id""",
        (job_name, dataset, provider, fingerprint, PIPELINE_VERSION, Jsonb(metadata)),
    )


def heartbeat(conn: psycopg.Connection, run_id: int, state: State, default_provider: str | None) -> None:
    """Counts so far and a fresh `metadata.last_heartbeat`."""
    _update(conn, run_id, state, default_provider)


def finish(
    conn: psycopg.Connection,
    run_id: int,
    status: RunStatus,
    state: State,
    default_provider: str | None,
    error: str | None = None,
    extra: dict | None = None,
) -> None:
    """Close the row: its final status and counts."""
    _update(conn, run_id, state, default_provider, status=status, error=error, extra=extra)


def _update(
    conn: psycopg.Connection,
    run_id: int,
    state: State,
    default_provider: str | None,
    *,
    status: RunStatus | None = None,
    error: str | None = None,
    extra: dict | None = None,
) -> None:
    """The counts of a running row; with `status`, closed as well."""
    conn.execute(
        """UPDATE job_runs SET rows_written = %(written)s, rows_failed = %(rejected)s, symbols = %(symbols)s,
                  min_ts = %(min)s, max_ts = %(max)s, provider = coalesce(%(provider)s, provider),
                  status = coalesce(%(status)s, status),
                  error_message = CASE WHEN %(status)s::text IS NULL THEN error_message ELSE %(error)s END,
                  completed_at = CASE WHEN %(status)s::text IS NULL THEN completed_at ELSE now() END,
                  metadata = metadata || %(extra)s
                             || jsonb_build_object('last_heartbeat', now(), 'rows_read', %(read)s::bigint)
           WHERE id = %(id)s AND status = 'running'""",
        {
            "written": state.rows_written,
            "rejected": state.rows_rejected,
            "symbols": sorted(state.symbols),
            "min": state.min_ts,
            "max": state.max_ts,
            "provider": _provider(state, default_provider),
            "status": status,
            "error": error,
            "extra": Jsonb(extra or {}),
            "read": state.rows_read,
            "id": run_id,
        },
    )


def close_interrupted(conn: psycopg.Connection, run_id: int, note: str) -> None:
    """A run that died without closing its row (killed worker): mark it failed."""
    conn.execute(
        """UPDATE job_runs SET status = 'failure', completed_at = now(), error_message = %s
           WHERE id = %s AND status = 'running'""",
        (note, run_id),
    )


def close_on_error(task: Task, run_id: int, state: State, provider: str | None, exc: BaseException) -> None:
    """Close the row of a run that failed or was stopped, on a session of its own (the
    run's sessions may have been terminated by a cancel or timeout)."""
    status, message = task.outcome(exc)
    try:
        with task.connect_aside() as conn:
            finish(
                conn,
                run_id,
                RunStatus.CANCELLED if status == "cancelled" else RunStatus.FAILURE,
                state,
                provider,
                error=message[:2000],
            )
    except psycopg.Error as err:
        task.log.warning("could not close the job_runs row", job_run_id=run_id, error=first_line(err))

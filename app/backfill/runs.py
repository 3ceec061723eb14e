"""The platform's `job_runs` audit row of a backfill (mode 'backfill').

One row per run: inserted as 'running', refreshed with counts and
`metadata.last_heartbeat` while it runs (inside each batch's transaction and while it
waits on a slow source), closed as 'success', 'failure' or 'cancelled'.
"""

from __future__ import annotations

import psycopg
from psycopg.types.json import Jsonb

from app.backfill.checkpoints import State
from app.backfill.task import Task
from app.config import SERVICE, VERSION
from app.db import scalar
from app.errors import first_line

PIPELINE_VERSION = f"{SERVICE} {VERSION}"


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
    conn.execute(
        """UPDATE job_runs SET rows_written = %s, rows_failed = %s, symbols = %s, min_ts = %s, max_ts = %s,
                  provider = coalesce(%s, provider),
                  metadata = metadata || jsonb_build_object('last_heartbeat', now(), 'rows_read', %s::bigint)
           WHERE id = %s AND status = 'running'""",
        (
            state.rows_written,
            state.rows_rejected,
            sorted(state.symbols),
            state.min_ts,
            state.max_ts,
            _provider(state, default_provider),
            state.rows_read,
            run_id,
        ),
    )


def finish(
    conn: psycopg.Connection,
    run_id: int,
    status: str,
    state: State,
    default_provider: str | None,
    error: str | None = None,
    extra: dict | None = None,
) -> None:
    conn.execute(
        """UPDATE job_runs SET status = %s, error_message = %s, completed_at = now(), rows_written = %s,
                  rows_failed = %s, symbols = %s, min_ts = %s, max_ts = %s, provider = coalesce(%s, provider),
                  metadata = metadata || %s || jsonb_build_object('last_heartbeat', now(), 'rows_read', %s::bigint)
           WHERE id = %s AND status = 'running'""",
        (
            status,
            error,
            state.rows_written,
            state.rows_rejected,
            sorted(state.symbols),
            state.min_ts,
            state.max_ts,
            _provider(state, default_provider),
            Jsonb(extra or {}),
            state.rows_read,
            run_id,
        ),
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
                conn, run_id, "cancelled" if status == "cancelled" else "failure", state, provider, error=message[:2000]
            )
    except psycopg.Error as err:
        task.log.warning("could not close the job_runs row", job_run_id=run_id, error=first_line(err))

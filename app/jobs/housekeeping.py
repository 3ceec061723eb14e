"""Job `housekeeping`: keep the ledger from growing without bound (scheduled, no route).

- finished jobs (success, failed, cancelled) requested more than `JOB_HISTORY_DAYS`
  (default 90) days ago are deleted, with their Idempotency-Keys;
- Idempotency-Keys older than 24 hours are deleted (a key reused after that starts a new
  run).

Deletes go in bounded batches, each its own short transaction, so the ledger is never
locked for long. Queued and running jobs are never touched.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import timedelta

import psycopg

from app.jobs.base import JobContext, JobKind

IDEMPOTENCY_TTL = timedelta(hours=24)
BATCH = 5000


def prune(conn: psycopg.Connection, history_days: int, check: Callable[[], None] | None = None) -> dict:
    """Delete what has expired; returns the counts. `conn` is an autocommit connection."""
    keys = conn.execute("DELETE FROM store_idempotency WHERE created_at < now() - %s", (IDEMPOTENCY_TTL,)).rowcount
    jobs = 0
    while True:
        if check is not None:
            check()
        deleted = conn.execute(
            """DELETE FROM store_jobs WHERE run_id IN (
                   SELECT run_id FROM store_jobs
                   WHERE requested_at < now() - make_interval(days => %s)
                     AND status IN ('success', 'failed', 'cancelled')
                   LIMIT %s)""",
            (history_days, BATCH),
        ).rowcount
        jobs += deleted
        if deleted < BATCH:
            break
    return {"jobs_deleted": jobs, "idempotency_keys_deleted": keys, "history_days": history_days}


def run(ctx: JobContext, params: dict) -> dict:
    with ctx.connect(autocommit=True) as conn:
        return prune(conn, ctx.settings.job_history_days, check=ctx.check)


KIND = JobKind(
    name="housekeeping",
    run=run,
    single_flight=lambda params: "housekeeping",
    timeout_s=900,
    description="Delete finished jobs older than JOB_HISTORY_DAYS and Idempotency-Keys older than 24 hours.",
)

"""Ledger housekeeping (app/jobs/housekeeping.py): old finished jobs and old
Idempotency-Keys go; active jobs and recent ones stay. The schedule is a setting."""

from __future__ import annotations

import uuid

from app.jobs import housekeeping
from tests.support.db import make_settings


def _job(conn, status: str, days_ago: float) -> str:
    run_id = str(uuid.uuid4())
    conn.execute(
        """INSERT INTO store_jobs (run_id, job, status, requested_at)
           VALUES (%s, 'migrate', %s, now() - make_interval(secs => %s))""",
        (run_id, status, days_ago * 86400),
    )
    return run_id


def _key(conn, run_id: str, hours_ago: float) -> None:
    conn.execute(
        """INSERT INTO store_idempotency (key, request_hash, run_id, created_at)
           VALUES (%s, 'h', %s, now() - make_interval(secs => %s))""",
        (f"k-{uuid.uuid4()}", run_id, hours_ago * 3600),
    )


def test_prune_keeps_active_and_recent_jobs_and_fresh_keys(conn):
    old = [_job(conn, s, 91) for s in ("success", "failed", "cancelled")]
    kept = [_job(conn, "queued", 200), _job(conn, "running", 200), _job(conn, "success", 89)]
    _key(conn, kept[2], 25)  # expired key of a kept job
    _key(conn, kept[2], 1)  # fresh key
    _key(conn, old[0], 1)  # fresh key of an expired job: goes with its job
    result = housekeeping.prune(conn, history_days=90)
    assert result == {"jobs_deleted": 3, "idempotency_keys_deleted": 1, "history_days": 90}
    left = {r[0] for r in conn.execute("SELECT run_id::text FROM store_jobs")}
    assert left == set(kept)
    assert conn.execute("SELECT count(*) FROM store_idempotency").fetchone()[0] == 1
    assert housekeeping.prune(conn, history_days=90)["jobs_deleted"] == 0


def test_prune_goes_in_bounded_batches(conn, monkeypatch):
    monkeypatch.setattr(housekeeping, "BATCH", 7)
    for _ in range(30):
        _job(conn, "success", 400)
    assert housekeeping.prune(conn, history_days=90)["jobs_deleted"] == 30


def test_the_schedule_and_history_are_settings():
    from app.jobs.schedules import definitions

    s = make_settings("postgresql://x@h/db", "redis://h:1/0", JOB_HISTORY_DAYS="30", HOUSEKEEPING_SCHEDULE="off")
    assert s.job_history_days == 30 and s.housekeeping_every is None
    housekeeping_schedule = next(d for d in definitions(s) if d.name == "housekeeping")
    assert housekeeping_schedule.paused and housekeeping_schedule.job == "housekeeping"
    default = make_settings("postgresql://x@h/db", "redis://h:1/0")
    assert default.job_history_days == 90 and default.housekeeping_every.total_seconds() == 3600

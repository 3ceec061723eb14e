"""A job past its timeout is failed and its database sessions are terminated."""

from __future__ import annotations

import pytest

from app.migrator import disk_ids
from tests.support.common import wait_for
from tests.support.faults import BLOCKABLE_ENV, MigrationBlocker, job_sessions, wait_blocked

pytestmark = pytest.mark.timeout(120)


def test_job_past_timeout_fails_and_its_sessions_are_gone(database_url, service_factory):
    # JOB_TIMEOUT_MIGRATE_SECONDS overrides the migrate kind's own 1800 s limit.
    svc = service_factory(database_url, env={**BLOCKABLE_ENV, "JOB_TIMEOUT_MIGRATE_SECONDS": "4"})
    with MigrationBlocker(database_url):
        run_id = svc.trigger("/migrate")
        wait_blocked(database_url, run_id)
        doc = svc.wait_job(run_id, timeout=45)  # still blocked: only the timeout can end it
        assert doc["status"] == "failed", doc
        assert "timed out after 4 s" in doc["error"], doc["error"]
        wait_for(
            lambda: not job_sessions(database_url, run_id),
            30,
            message="the timed-out job's database sessions to be gone",
        )
    assert svc.workers[0].poll() is None, "the worker survives a timed-out job"
    # The follow-up run is not under test: it gets the store's own limit, not the 4 s one
    # (a whole migration can take longer than 4 s on a busy machine). The ledger stamps a
    # job's limit when it is triggered, so the processes restart without the override.
    svc.stop()
    again = service_factory(database_url, env=BLOCKABLE_ENV).migrate()
    # the next run is not blocked by anything the timed-out one left
    assert again["result"]["applied"] == list(disk_ids()[1:])

"""SIGKILL of the worker in the middle of a migration's DDL."""

from __future__ import annotations

import signal

import pytest

from app.migrator import disk_ids
from tests.support.common import wait_for
from tests.support.faults import (
    BLOCKABLE_ENV,
    MigrationBlocker,
    applied_migrations,
    job_sessions,
    table_exists,
    wait_blocked,
    yoyo_lock_rows,
)
from tests.support.service import LOSS_ENV, NORMAL_LOSS_ENV

pytestmark = pytest.mark.timeout(120)


def test_sigkill_during_migration_leaves_schema_as_before_and_next_run_applies(database_url, service_factory):
    svc = service_factory(database_url, env={**BLOCKABLE_ENV, **LOSS_ENV})  # lost after 6 s
    worker = svc.workers[0]
    with MigrationBlocker(database_url):
        run_id = svc.trigger("/migrate")
        wait_blocked(database_url, run_id)  # 0001 applied and recorded; 0002's CREATE TABLE waits
        assert applied_migrations(database_url) == ["0001_job_ledger"]
        worker.send_signal(signal.SIGKILL)
        worker.wait(10)
    # The blocker is gone, so the dead migrator's backend would go on: it must not commit.
    wait_for(lambda: not job_sessions(database_url, run_id), 30, message="the killed migrator's sessions to end")
    assert applied_migrations(database_url) == ["0001_job_ledger"]
    assert not table_exists(database_url, "job_runs")
    assert not table_exists(database_url, "job_runs_summary")
    assert yoyo_lock_rows(database_url) == 1, "the killed migrator leaves yoyo's lock row behind"
    assert svc.wait_job(run_id, timeout=30)["status"] == "failed"

    svc.restart(NORMAL_LOSS_ENV)  # a fresh worker; the next run is not about losing one
    doc = svc.migrate()  # not blocked by the stale lock
    assert doc["result"]["applied"] == list(disk_ids()[1:])  # 0002 and whatever follows it
    assert applied_migrations(database_url) == sorted(disk_ids())
    assert table_exists(database_url, "job_runs") and table_exists(database_url, "job_runs_summary")
    assert yoyo_lock_rows(database_url) == 0
    assert svc.get("/schema/version").json()["pending"] == []

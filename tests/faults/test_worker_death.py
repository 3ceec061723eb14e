"""The worker dies (SIGKILL) or is asked to stop (SIGTERM) in the middle of a job."""

from __future__ import annotations

import signal

import pytest

from app.migrator import disk_ids
from tests.support.common import wait_for
from tests.support.faults import BLOCKABLE_ENV, MigrationBlocker, wait_blocked

pytestmark = pytest.mark.timeout(150)

SUPERVISION = ("JOB_HEARTBEAT_SECONDS", "JOB_LOST_AFTER_SECONDS", "JOB_REQUEUE_AFTER_SECONDS")


def test_sigkill_mid_job_is_failed_worker_lost_within_90s_with_defaults(database_url, service_factory):
    svc = service_factory(database_url, env=BLOCKABLE_ENV, start=False)
    for name in SUPERVISION:  # the store's defaults: heartbeat 5 s, lost after 30 s, sweep every 5 s
        svc.env.pop(name)
    svc.start()
    worker = svc.workers[0]
    with MigrationBlocker(database_url):
        run_id = svc.trigger("/migrate")
        wait_blocked(database_url, run_id)
        assert svc.get(f"/jobs/{run_id}").json()["status"] == "running"
        worker.send_signal(signal.SIGKILL)
        worker.wait(10)
        assert all(w.poll() is not None for w in svc.workers), "no worker may be alive"
        # Only the API's sweepers are left to notice.
        doc = svc.wait_job(run_id, timeout=90)
    assert doc["status"] == "failed", doc
    assert "worker lost" in doc["error"], doc["error"]
    assert doc["finished_at"]

    # Running it again with a fresh worker works.
    svc.start_worker()
    again = svc.migrate()
    assert again["run_id"] != run_id
    assert again["result"]["version"] == disk_ids()[-1]


def test_sigterm_mid_job_finishes_it_then_exits_zero_and_takes_no_new_job(database_url, service_factory):
    svc = service_factory(database_url, env=BLOCKABLE_ENV)
    worker = svc.workers[0]
    with MigrationBlocker(database_url):
        first = svc.trigger("/migrate")
        wait_blocked(database_url, first)
        worker.send_signal(signal.SIGTERM)
        second = svc.trigger("/migrate", {"dry_run": True})  # waits in the queue behind the first
    doc = svc.wait_job(first, timeout=60)
    assert doc["status"] == "success", doc
    assert doc["result"]["applied"][-1] == disk_ids()[-1]

    wait_for(lambda: worker.poll() is not None, 30, message="the worker to exit after its job")
    assert worker.returncode == 0
    assert svc.get(f"/jobs/{second}").json()["status"] == "queued"

    svc.start_worker()  # the queued job is still there for the next worker
    assert svc.wait_job(second, timeout=60)["status"] == "success"

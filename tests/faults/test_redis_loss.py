"""Redis killed and restarted empty while jobs wait in its queue."""

from __future__ import annotations

import pytest
import redis

from tests.support.faults import BLOCKABLE_ENV, MigrationBlocker, alive, children, wait_blocked

pytestmark = pytest.mark.timeout(120)


def test_redis_restarted_empty_loses_no_job_and_needs_no_restart(database_url, redis_server, service_factory):
    svc = service_factory(database_url, env=BLOCKABLE_ENV)
    worker, api = svc.workers[0], svc.api
    api_workers = children(api.pid)
    client = redis.Redis.from_url(redis_server.url)
    with MigrationBlocker(database_url):
        busy = svc.trigger("/migrate")  # occupies the only worker
        wait_blocked(database_url, busy)
        waiting = svc.trigger("/migrate", {"dry_run": True})  # waits in Redis behind it
        assert client.llen("rq:queue:store") == 1
        client.set("fault:sentinel", "1")

        redis_server.kill()
        redis_server.start()  # same port, nothing persisted
        assert client.get("fault:sentinel") is None, "Redis came back empty"

    # The running job ends normally; the waiting one is enqueued again from the ledger and
    # runs, once, after it: a dry run that finds nothing left to apply.
    assert svc.wait_job(busy, timeout=60)["status"] == "success"
    doc = svc.wait_job(waiting, timeout=60)
    assert doc["status"] == "success", doc
    assert doc["result"]["pending"] == [] and doc["error"] is None, doc

    # New jobs run, with every process the one that ran before.
    assert svc.run_job("/migrate", {"dry_run": True})["result"]["pending"] == []
    assert worker.poll() is None and api.poll() is None
    assert children(api.pid) == api_workers and all(alive(p) for p in api_workers)
    queued = svc.get("/jobs?status=queued").json()["jobs"]
    assert queued == [], queued

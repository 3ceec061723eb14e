"""Postgres stopped and started under a running service (a throwaway cluster of the test's own)."""

from __future__ import annotations

import pytest
import requests

from tests.support.common import wait_for
from tests.support.faults import alive, children

pytestmark = pytest.mark.timeout(150)


def _database_state(doc: dict) -> str:
    return next(c for c in doc["components"] if c["name"] == "database")["state"]


def test_postgres_outage_is_reported_and_recovered_without_restarts(pg_cluster, service_factory):
    with pg_cluster.admin() as conn:
        conn.execute("CREATE DATABASE store")
    svc = service_factory(pg_cluster.url("store"))
    svc.migrate()
    done = svc.trigger("/migrate", {"dry_run": True})
    svc.wait_job(done)
    api, worker = svc.api, svc.workers[0]
    api_workers = children(api.pid)
    assert len(api_workers) == 2

    pg_cluster.stop("fast")

    def degraded():
        resp = requests.get(svc.url + "/health", timeout=5)
        return resp.status_code == 200 and _database_state(resp.json()) != "healthy" and resp

    doc = wait_for(degraded, 15, message="/health to report the database").json()
    database = next(c for c in doc["components"] if c["name"] == "database")
    assert database["details"]["reachable"] == "false"
    for path in ("/health", "/healthz"):
        assert requests.get(svc.url + path, timeout=5).status_code == 200
    ready = requests.get(svc.url + "/readyz", timeout=5)
    assert ready.status_code == 503 and _database_state(ready.json()) != "healthy"
    for method, path, body in (
        ("post", "/migrate", {}),
        ("post", "/migrate", {"dry_run": True}),
        ("get", f"/jobs/{done}", None),
        ("get", "/jobs", None),
    ):
        resp = getattr(svc.session, method)(svc.url + path, json=body, timeout=10)
        assert resp.status_code == 503, (path, resp.status_code, resp.text)
        assert resp.headers["Content-Type"].startswith("application/json")
        assert "database" in resp.json()["error"]

    pg_cluster.start()
    wait_for(
        lambda: requests.get(svc.url + "/readyz", timeout=5).status_code == 200,
        20,
        message="/readyz to be 200 after Postgres came back",
    )
    assert svc.run_job("/migrate", {"dry_run": True}, timeout=60)["result"]["pending"] == []

    assert api.poll() is None and worker.poll() is None, "no process restarted"
    assert children(api.pid) == api_workers and all(alive(p) for p in api_workers)

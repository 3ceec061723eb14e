"""Honest failure words and a bounded public surface, against the running service.

- a Postgres outage in the middle of a job ends it `failed` with the database's error,
  not "worker lost", and the worker carries on;
- `store_workers` counts live workers only;
- invented HTTP methods and paths add no metric series;
- the public probes name no host, port or URL; errors name no absolute server path;
- a full queue answers 429 with Retry-After.
"""

from __future__ import annotations

import http.client
import os
import signal

import pytest
import requests

from tests.support.backfill import bars, write_ndjson
from tests.support.common import wait_for
from tests.support.file_server import FileServer
from tests.support.service import scrape

pytestmark = [pytest.mark.slow, pytest.mark.timeout(240)]


def test_a_postgres_outage_mid_job_fails_it_with_the_database_error(pg_cluster, service_factory, tmp_path):
    with pg_cluster.admin() as conn:
        conn.execute("CREATE DATABASE store")
    write_ndjson(tmp_path / "slow.ndjson", bars(4000, ("pgo",)))
    svc = service_factory(
        pg_cluster.url("store"), env={"BACKFILL_SOURCE_DIR": str(tmp_path), "BACKFILL_URL_ALLOW": "127.0.0.1"}
    )
    svc.migrate()
    worker = svc.workers[0]
    with FileServer(tmp_path) as server:  # 40 pieces 0.15 s apart: a load of about 6 s
        run_id = svc.trigger("/backfill/bars_ohlcv", {"source": f"{server.url}/slow/slow.ndjson", "batch_rows": 200})
        wait_for(
            lambda: (svc.get(f"/jobs/{run_id}").json()["progress"] or {}).get("rows_written", 0) > 0,
            30,
            message="the load to commit a batch",
        )
        pg_cluster.stop("fast")
        # down for longer than JOB_LOST_AFTER_SECONDS (6 s here): the reaper's verdict would be "worker lost"
        wait_for(lambda: "cannot record the job's outcome yet" in svc.logs("worker-0.log"), 30, message="the retry")
        pg_cluster.start()

        def final():
            doc = svc.get(f"/jobs/{run_id}").json()
            return doc if doc["status"] == "failed" and not doc["error"].startswith("worker lost") else None

        doc = wait_for(final, 60, 0.5, message="the job to be failed with its own error")
    assert any(w in doc["error"] for w in ("OperationalError", "AdminShutdown", "terminating connection")), doc
    assert worker.poll() is None  # the worker lived, and runs the next job
    assert svc.run_job("/migrate", {"dry_run": True})["status"] == "success"


def test_store_workers_counts_live_workers_only(migrated_database_url, service_factory):
    svc = service_factory(migrated_database_url, workers=2)
    wait_for(lambda: scrape(svc).get("store_workers") == 2, 20, message="two live workers")
    victim = svc.workers[1]
    os.killpg(victim.pid, signal.SIGKILL)
    victim.wait(10)
    wait_for(lambda: scrape(svc).get("store_workers") == 1, 40, 0.5, message="the killed worker to drop out")


def _raw(port: int, method: str, path: str) -> int:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        conn.request(method, path)
        return conn.getresponse().status
    finally:
        conn.close()


def _series(svc) -> set[str]:
    return {k for k in scrape(svc) if k.startswith(("http_requests_total", "http_request_duration_seconds_count"))}


def test_invented_methods_and_paths_add_no_metric_series(migrated_database_url, service_factory, tmp_path):
    svc = service_factory(migrated_database_url, env={"BACKFILL_SOURCE_DIR": str(tmp_path)})
    for method in ("GET", "BREW", "PROPFIND"):  # the two label values any of them can make
        _raw(svc.port, method, "/no/such/path")
    scrape(svc)  # a scrape counts itself only after it answered
    before = _series(svc)
    for i in range(400):
        status = _raw(svc.port, f"X{i}METHOD", f"/invented/{i}")
        assert status in (400, 404, 405, 501), status
    after = _series(svc)
    assert after == before, sorted(after - before)
    labels = {k.split("{", 1)[1] for k in after}
    assert all('method="other"' in lab or 'method="GET"' in lab for lab in labels if 'endpoint="unmatched"' in lab)


def test_probes_name_no_host_or_url_and_errors_no_server_path(migrated_database_url, service_factory, tmp_path):
    source_dir = tmp_path / "secret-layout" / "backfill"
    source_dir.mkdir(parents=True)
    svc = service_factory(migrated_database_url, env={"BACKFILL_SOURCE_DIR": str(source_dir)})
    doc = svc.wait_job(svc.trigger("/drift/check"), 60)  # the registry (127.0.0.1:9) is down
    assert doc["status"] in ("success", "failed")
    for path in ("/health", "/healthz", "/readyz"):
        text = requests.get(svc.url + path, timeout=5).text
        for leak in ("127.0.0.1", "http://", "redis://", "postgres", str(tmp_path)):
            assert leak not in text, (path, leak, text)
    resp = svc.post("/backfill/bars_ohlcv", {"source": f"{source_dir}/missing.csv"})
    assert resp.status_code == 400 and "no file 'missing.csv'" in resp.json()["error"]
    assert str(tmp_path) not in resp.text
    gone = tmp_path / "gone"
    other = service_factory(migrated_database_url, env={"BACKFILL_SOURCE_DIR": str(gone)})
    resp = other.post("/backfill/bars_ohlcv", {"source": "x.csv"})
    assert resp.status_code == 400 and "BACKFILL_SOURCE_DIR does not exist" in resp.json()["error"]
    assert str(gone) not in resp.text


def test_a_full_queue_answers_429_with_retry_after(migrated_database_url, service_factory, tmp_path):
    svc = service_factory(
        migrated_database_url, env={"JOB_QUEUE_MAX": "2", "BACKFILL_SOURCE_DIR": str(tmp_path)}, start=False
    ).start_api()  # no worker: jobs stay queued
    first = svc.trigger("/migrate", {"dry_run": True})
    svc.trigger("/retention/apply", {"dry_run": True})
    full = svc.post("/migrate")
    assert full.status_code == 429 and full.headers["Retry-After"] == "30"
    assert "JOB_QUEUE_MAX" in full.json()["error"]
    again = svc.post("/migrate", {"dry_run": True})  # joins the queued run: no new job, so allowed
    assert again.status_code == 202 and again.json()["run_id"] == first
    assert svc.post(f"/jobs/{first}/cancel").status_code in (200, 202)
    assert svc.post("/migrate").status_code == 202  # room again

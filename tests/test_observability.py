"""Logs, request ids, metrics and process lifecycle, from the outside."""

from __future__ import annotations

import signal
import uuid

import requests

from tests.support.common import wait_for
from tests.support.service import json_lines, scrape


def test_request_id_is_echoed_and_carried_into_the_jobs_log_lines(migrated_service):
    rid = f"req-{uuid.uuid4().hex}"
    resp = migrated_service.post("/migrate", {"dry_run": True}, headers={"X-Request-ID": rid})
    assert resp.headers["X-Request-ID"] == rid
    run_id = resp.json()["run_id"]
    doc = migrated_service.wait_job(run_id)
    assert doc["request_id"] == rid
    api_lines = json_lines(migrated_service.logs("api.log"))
    assert any(l.get("request_id") == rid and l.get("path") == "/migrate" for l in api_lines)

    def worker_events():
        lines = json_lines(migrated_service.logs("worker-0.log"))
        events = {l["event"] for l in lines if l.get("run_id") == run_id and l.get("request_id") == rid}
        return {"job started", "job finished"} <= events

    wait_for(worker_events, 30, message="worker lines 'job started'/'job finished' with run_id and request_id")


def test_a_request_id_is_generated_when_missing_or_unsafe(migrated_service):
    plain = migrated_service.get("/health")
    assert len(plain.headers["X-Request-ID"]) >= 16
    unsafe = migrated_service.get("/health", headers={"X-Request-ID": "bad id\twith spaces"})
    assert unsafe.headers["X-Request-ID"] != "bad id\twith spaces"


def test_log_level_is_honoured(database_url, service_factory):
    svc = service_factory(database_url, env={"LOG_LEVEL": "WARNING"})
    svc.run_job("/migrate")
    levels = {line["level"] for line in json_lines(svc.all_logs())}
    assert levels <= {"warning", "error", "critical"}


def test_metrics_are_named_as_the_guide_says_and_count_across_workers(migrated_service):
    run_ids = [migrated_service.run_job("/migrate", {"dry_run": True})["run_id"] for _ in range(3)]
    for _ in range(20):
        requests.get(migrated_service.url + f"/jobs/{run_ids[0]}", timeout=5)  # unauthenticated: 401s count too
    finished = 'store_jobs_total{kind="migrate",status="success"}'
    samples = wait_for(
        lambda: (m := scrape(migrated_service)).get(finished, 0) >= 3 and m,
        30,
        message="three successful migrate jobs counted",
    )
    assert samples["store_up"] == 1.0
    # the route template is the label: one series for every run id
    job_series = [k for k in samples if k.startswith("http_requests_total") and "/jobs/" in k]
    assert job_series == ['http_requests_total{endpoint="/jobs/<run_id>",method="GET"}']
    assert samples[job_series[0]] >= 20 + 3  # summed over both gunicorn workers
    assert any(k.startswith("http_request_duration_seconds_bucket") for k in samples)
    assert "store_queue_depth" in samples and "store_workers" in samples


def test_sigterm_stops_gunicorn_and_an_idle_worker_cleanly(migrated_service):
    api, worker = migrated_service.api, migrated_service.workers[0]
    api.send_signal(signal.SIGTERM)
    worker.send_signal(signal.SIGTERM)
    assert api.wait(30) == 0
    assert worker.wait(30) == 0
    assert "worker stopped" in migrated_service.logs("worker-0.log")

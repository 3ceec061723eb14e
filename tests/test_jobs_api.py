"""The job API: trigger, poll, list, cancel, idempotency and single flight."""

from __future__ import annotations

import concurrent.futures
import uuid

import psycopg
import pytest

from app.migrator import MIGRATE_LOCK_KEY


def test_trigger_answers_202_with_run_id_and_location(service):
    resp = service.post("/migrate")
    assert resp.status_code == 202
    body = resp.json()
    assert body["status"] == "accepted" and body["job"] == "migrate"
    assert resp.headers["Location"] == f"/jobs/{body['run_id']}"
    doc = service.wait_job(body["run_id"])
    assert doc["status"] == "success"
    assert set(doc) >= {
        "run_id",
        "job",
        "status",
        "params",
        "progress",
        "result",
        "error",
        "requested_at",
        "started_at",
        "finished_at",
    }
    assert doc["params"] == {"dry_run": False}
    assert doc["requested_at"] <= doc["started_at"] <= doc["finished_at"]
    assert doc["error"] is None


def test_unknown_and_malformed_run_ids_are_404_json(migrated_service):
    for run_id in (str(uuid.uuid4()), "not-a-uuid", "1;DROP TABLE store_jobs"):
        resp = migrated_service.get(f"/jobs/{run_id}")
        assert resp.status_code == 404
        assert "no job" in resp.json()["error"]


def test_list_is_newest_first_filtered_and_bounded(migrated_service):
    first = migrated_service.run_job("/migrate", {"dry_run": True})
    second = migrated_service.run_job("/migrate", {"dry_run": True})
    jobs = migrated_service.get("/jobs", params={"job": "migrate", "status": "success", "limit": 2}).json()["jobs"]
    assert [j["run_id"] for j in jobs] == [second["run_id"], first["run_id"]]
    assert migrated_service.get("/jobs", params={"status": "failed"}).json()["jobs"] == []
    for params in ({"limit": 0}, {"limit": 201}, {"limit": "x"}, {"status": "done"}, {"job": "nope"}):
        resp = migrated_service.get("/jobs", params=params)
        assert resp.status_code == 400, params
        assert resp.json()["error"]


def test_a_cancelled_queued_job_never_runs(database_url, service_factory):
    svc = service_factory(database_url, workers=0)
    run_id = svc.trigger("/migrate")
    resp = svc.post(f"/jobs/{run_id}/cancel")
    assert resp.status_code == 200 and resp.json()["status"] == "cancelled"
    svc.start_worker()
    follow_up = svc.run_job("/migrate")  # proves the worker is taking jobs
    assert follow_up["result"]["applied"]  # the cancelled run applied nothing
    assert svc.get(f"/jobs/{run_id}").json()["status"] == "cancelled"
    assert svc.post(f"/jobs/{run_id}/cancel").status_code == 409


def test_a_running_job_is_stopped_by_cancel(migrated_service, migrated_database_url):
    with psycopg.connect(migrated_database_url, autocommit=True) as holder:
        holder.execute("SELECT pg_advisory_lock(%s)", (MIGRATE_LOCK_KEY,))  # the migration waits for it
        run_id = migrated_service.trigger("/migrate")
        migrated_service.wait_job(run_id, 20, statuses=("running",))
        resp = migrated_service.post(f"/jobs/{run_id}/cancel")
        assert resp.status_code == 202 and resp.json()["cancel_requested"] is True
        doc = migrated_service.wait_job(run_id, 20)
    assert doc["status"] == "cancelled"
    assert doc["finished_at"] is not None


def test_cancel_of_a_finished_job_is_409(migrated_service):
    doc = migrated_service.run_job("/migrate", {"dry_run": True})
    resp = migrated_service.post(f"/jobs/{doc['run_id']}/cancel")
    assert resp.status_code == 409
    assert "success" in resp.json()["error"]


def test_idempotency_key_returns_the_same_run_and_rejects_another_body(migrated_service):
    headers = {"Idempotency-Key": f"key-{uuid.uuid4()}"}
    first = migrated_service.post("/migrate", {"dry_run": True}, headers=headers).json()["run_id"]
    migrated_service.wait_job(first)
    again = migrated_service.post("/migrate", {"dry_run": True}, headers=headers)
    assert again.status_code == 202 and again.json()["run_id"] == first
    other = migrated_service.post("/migrate", {"dry_run": False}, headers=headers)
    assert other.status_code == 409
    assert "Idempotency-Key" in other.json()["error"]
    bad = migrated_service.post("/migrate", headers={"Idempotency-Key": "x" * 201})
    assert bad.status_code == 400


def test_single_flight_holds_under_30_simultaneous_triggers(database_url, service_factory):
    svc = service_factory(database_url, workers=0)
    with concurrent.futures.ThreadPoolExecutor(30) as pool:
        responses = list(pool.map(lambda _: svc.post("/migrate"), range(30)))
    assert {r.status_code for r in responses} == {202}
    run_ids = {r.json()["run_id"] for r in responses}
    assert len(run_ids) == 1
    assert sum(r.json()["new"] for r in responses) == 1
    svc.start_worker()
    assert svc.wait_job(run_ids.pop())["status"] == "success"
    # once it finished, a new trigger makes a new run
    assert svc.run_job("/migrate")["result"]["applied"] == []


@pytest.mark.parametrize("body", [b"{not json", b"[1, 2]", b'"text"', b'{"dry_run": "yes"}', b'{"force": true}'])
def test_bad_trigger_bodies_are_400(migrated_service, body):
    resp = migrated_service.post("/migrate", data=body, headers={"Content-Type": "application/json"})
    assert resp.status_code == 400
    assert resp.json()["error"]
    assert migrated_service.get("/jobs", params={"status": "queued"}).json()["jobs"] == []


def test_lost_queue_entries_are_enqueued_again(database_url, service_factory, redis_url):
    import redis

    svc = service_factory(database_url, workers=0)
    run_id = svc.trigger("/migrate")
    redis.Redis.from_url(redis_url).flushall()  # Redis lost everything, the ledger did not
    svc.start_worker()
    doc = svc.wait_job(run_id, 30)
    assert doc["status"] == "success"


def test_a_dead_workers_job_is_failed_by_the_api_alone(service_factory, migrated_database_url):
    import os
    import signal

    from tests.support.service import LOSS_ENV

    migrated_service = service_factory(migrated_database_url, env=LOSS_ENV)
    with psycopg.connect(migrated_database_url, autocommit=True) as holder:
        holder.execute("SELECT pg_advisory_lock(%s)", (MIGRATE_LOCK_KEY,))
        run_id = migrated_service.trigger("/migrate")
        migrated_service.wait_job(run_id, 20, statuses=("running",))
        worker = migrated_service.workers[0]
        os.killpg(worker.pid, signal.SIGKILL)
        worker.wait(10)
        doc = migrated_service.wait_job(run_id, 30)  # lost after 6 s (LOSS_ENV)
    assert doc["status"] == "failed"
    assert "worker lost" in doc["error"]

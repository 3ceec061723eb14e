"""GET /jobs answers real questions: every filter, cursor paging under concurrent inserts,
duration, queue position and what a queued job waits for, and POST /jobs/<run_id>/retry.

The Flask app runs in-process over a real, migrated database and the test Redis; jobs are
written straight into the ledger with fixed timestamps, so nothing depends on the clock.
"""

from __future__ import annotations

import threading
import uuid
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta

import psycopg
import pytest
import redis
from psycopg.types.json import Jsonb

from tests.support.common import TOKEN
from tests.support.db import make_settings

T0 = datetime(2025, 3, 1, 12, 0, tzinfo=UTC)
AUTH = {"Authorization": f"Bearer {TOKEN}"}


@pytest.fixture
def client(migrated_database_url, redis_url, monkeypatch):
    monkeypatch.setenv("STORE_DISABLE_SWEEPER", "1")
    from app import create_app, resources_of

    app = create_app(make_settings(migrated_database_url, redis_url))
    yield app.test_client()
    resources_of(app).close()


def insert(conn, job="migrate", status="success", at=T0, trigger="api", params=None, started=None, finished=None):
    run_id = str(uuid.uuid4())
    conn.execute(
        """INSERT INTO store_jobs (run_id, job, status, params, trigger, requested_at, started_at, finished_at)
           VALUES (%s, %s, %s, %s, %s, %s, %s, %s)""",
        (run_id, job, status, Jsonb(params or {}), trigger, at, started, finished),
    )
    return run_id


def get(client, **params):
    resp = client.get("/jobs", query_string=params, headers=AUTH)
    return resp.status_code, resp.get_json()


def ids(body) -> list[str]:
    return [j["run_id"] for j in body["jobs"]]


def test_every_filter_of_the_jobs_list(client, conn):
    a = insert(conn, "migrate", "success", T0)
    b = insert(conn, "backfill.bars_ohlcv", "running", T0 + timedelta(minutes=1))
    c = insert(conn, "backfill.aggregates", "queued", T0 + timedelta(minutes=2))
    d = insert(conn, "retention", "failed", T0 + timedelta(minutes=3), trigger="schedule")
    e = insert(conn, "refresh_aggregate", "cancelled", T0 + timedelta(minutes=4), trigger="schedule")

    status, body = get(client)
    assert status == 200 and set(body) == {"jobs", "next_cursor", "total"}
    assert ids(body) == [e, d, c, b, a] and body["total"] == 5 and body["next_cursor"] is None
    assert ids(get(client, job="migrate")[1]) == [a]  # exact
    assert ids(get(client, job="backfill.")[1]) == [c, b]  # prefix
    assert ids(get(client, job="re")[1]) == [e, d]  # retention, refresh_aggregate
    assert ids(get(client, status="running,queued")[1]) == [c, b]
    assert ids(get(client, status="failed, cancelled")[1]) == [e, d]
    assert ids(get(client, since=(T0 + timedelta(minutes=1)).isoformat(), until="2025-03-01T12:03:00Z")[1]) == [c, b]
    assert ids(get(client, since="2025-03-01T12:03:00")[1]) == [e, d]  # no offset: UTC
    assert ids(get(client, trigger="schedule")[1]) == [e, d]
    assert ids(get(client, trigger="api", job="backfill.", status="queued")[1]) == [c]
    status, body = get(client, limit=2)
    assert ids(body) == [e, d] and body["total"] == 5 and body["next_cursor"]
    status, body = get(client, limit=2, cursor=body["next_cursor"])
    assert ids(body) == [c, b] and body["next_cursor"]
    status, body = get(client, limit=2, cursor=body["next_cursor"])
    assert ids(body) == [a] and body["next_cursor"] is None

    for params, needle in (
        ({"since_time": "x"}, "allowed: job, status, since, until, trigger, limit, cursor"),
        ({"job": "nope"}, "unknown job"),
        ({"status": "running,done"}, "unknown status 'done'"),
        ({"since": "yesterday"}, "since must be an ISO 8601 time"),
        ({"since": "2025-03-02T00:00:00Z", "until": "2025-03-01T00:00:00Z"}, "since must be before until"),
        ({"trigger": "cron"}, "trigger must be one of api, schedule"),
        ({"limit": "0"}, "limit must be an integer from 1 to 200"),
        ({"limit": "201"}, "limit must be an integer from 1 to 200"),
        ({"cursor": "not-a-cursor"}, "cursor is not one this API issued"),
        ({"status": ["queued", "running"]}, "given more than once"),
    ):
        status, body = get(client, **params)
        assert status == 400 and needle in body["error"], (params, body)


def test_paging_returns_each_of_500_concurrently_inserted_jobs_exactly_once(client, migrated_database_url):
    """500 jobs inserted by 10 concurrent writers, many sharing a timestamp (the run id breaks
    ties); more jobs keep arriving while the pages are read. Every one of the 500 is on
    exactly one page."""

    def writer(n: int) -> list[str]:
        out = []
        with psycopg.connect(migrated_database_url, autocommit=True) as c:
            for i in range(50):
                out.append(insert(c, at=T0 + timedelta(seconds=(n * 50 + i) // 7)))  # 7 jobs per second
        return out

    with ThreadPoolExecutor(10) as pool:
        original = [run_id for chunk in pool.map(writer, range(10)) for run_id in chunk]
    assert len(set(original)) == 500

    stop = threading.Event()
    late: list[str] = []

    def keep_inserting() -> None:  # jobs at every time: newer, older and tied with the ones paged
        with psycopg.connect(migrated_database_url, autocommit=True) as c:
            i = 0
            while not stop.is_set() and i < 2000:
                late.append(insert(c, at=T0 + timedelta(seconds=(i * 13) % 80)))
                i += 1

    inserter = threading.Thread(target=keep_inserting)
    inserter.start()
    seen: list[str] = []
    cursor = None
    try:
        for _ in range(200):
            params = {"limit": 37, **({"cursor": cursor} if cursor else {})}
            status, body = get(client, **params)
            assert status == 200, body
            seen += ids(body)
            cursor = body["next_cursor"]
            if cursor is None:
                break
    finally:
        stop.set()
        inserter.join()
    assert cursor is None, "paging did not end"
    assert len(seen) == len(set(seen)), "a job was returned twice"
    missing = set(original) - set(seen)
    assert not missing, f"{len(missing)} of the 500 jobs were never returned"
    assert late, "nothing was inserted while paging"


def test_duration_queue_position_and_what_a_queued_job_waits_for(client, conn, redis_url):
    done = insert(conn, status="success", started=T0, finished=T0 + timedelta(seconds=90, milliseconds=500))
    running = insert(conn, "retention", status="running", started=T0)
    first = insert(conn, "backfill.bars_ohlcv", status="queued", at=T0 + timedelta(seconds=1))
    second = insert(conn, "drift_check", status="queued", at=T0 + timedelta(seconds=2))

    def doc(run_id):
        resp = client.get(f"/jobs/{run_id}", headers=AUTH)
        assert resp.status_code == 200
        return resp.get_json()

    assert doc(done)["duration_s"] == 90.5
    assert doc(done)["queue_position"] is None and doc(done)["waiting_for"] is None
    assert doc(running)["duration_s"] > 0  # so far (started at a fixed time in the past)
    assert doc(first)["duration_s"] is None
    # nobody registered on the queue
    assert (doc(first)["queue_position"], doc(first)["waiting_for"]) == (1, "no worker alive")
    assert (doc(second)["queue_position"], doc(second)["waiting_for"]) == (2, "no worker alive")

    # a worker registers (as `python -m worker` does through RQ): now the run ids ahead
    from rq import Worker

    from app.queue import JobQueue

    settings = make_settings("postgresql://x@127.0.0.1/x", redis_url)
    worker = Worker([JobQueue(settings).rq()], connection=redis.Redis.from_url(redis_url), name="busy-worker")
    worker.register_birth()
    try:
        assert doc(first)["waiting_for"] == [running]
        assert doc(second)["waiting_for"] == [running, first]
        listed = {j["run_id"]: j for j in get(client, status="queued")[1]["jobs"]}
        assert listed[second]["queue_position"] == 2 and listed[second]["waiting_for"] == [running, first]
    finally:
        worker.register_death()


def test_retry_reruns_a_failed_or_cancelled_job_with_its_parameters(client, conn):
    params = {"source": "x.ndjson", "format": None, "max_bad_rows": 3}
    failed = insert(conn, "backfill.bars_ohlcv", "failed", params=params)
    cancelled = insert(conn, "migrate", "cancelled", params={"dry_run": True})
    succeeded = insert(conn, "migrate", "success", params={"dry_run": False})

    resp = client.post(f"/jobs/{failed}/retry", headers=AUTH)
    assert resp.status_code == 202, resp.get_json()
    body = resp.get_json()
    assert body["job"] == "backfill.bars_ohlcv" and body["new"] is True and body["retry_of"] == failed
    assert resp.headers["Location"] == f"/jobs/{body['run_id']}"
    new = client.get(f"/jobs/{body['run_id']}", headers=AUTH).get_json()
    assert new["retry_of"] == failed and new["params"] == params and new["status"] == "queued"
    assert new["trigger"] == "api"

    # single flight: while the retry is queued, retrying again answers with it
    again = client.post(f"/jobs/{failed}/retry", headers=AUTH).get_json()
    assert again["run_id"] == body["run_id"] and again["new"] is False

    resp = client.post(f"/jobs/{cancelled}/retry", headers=AUTH)
    assert resp.status_code == 202
    assert client.get(resp.headers["Location"], headers=AUTH).get_json()["params"] == {"dry_run": True}

    resp = client.post(f"/jobs/{succeeded}/retry", headers=AUTH)
    assert resp.status_code == 409 and "only failed or cancelled jobs" in resp.get_json()["error"]
    assert client.post(f"/jobs/{uuid.uuid4()}/retry", headers=AUTH).status_code == 404
    assert client.post("/jobs/nope/retry", headers=AUTH).status_code == 404
    assert client.post(f"/jobs/{failed}/retry").status_code == 401

"""Secrets never leak: a canary ADMIN_TOKEN and a canary database password go through a
full job cycle (failures, an outage, DEBUG logs) and appear nowhere: not in the API's
or the worker's logs, not in /metrics, not in any job document, not anywhere in Redis.

The database is a throwaway cluster with scram-sha-256 on TCP, so the canary password
is really needed (a wrong one is refused) and really travels in DATABASE_URL.
"""

from __future__ import annotations

import json
import uuid
import zlib
from urllib.parse import quote

import psycopg
import pytest
import redis
import requests

from tests.support.common import wait_for
from tests.support.faults import MigrationBlocker
from tests.support.pg_cluster import PgCluster

pytestmark = pytest.mark.timeout(240)


@pytest.fixture
def canary():
    tag = uuid.uuid4().hex
    return {
        "tag": tag,
        "token": f"canary-token-{tag}",
        # characters that need quoting in a URL, so both spellings are looked for
        "password": f"canary-pw-{tag}-p@ss:w/rd",
    }


@pytest.fixture
def scram_cluster(canary):
    cluster = PgCluster(host_auth="scram-sha-256").init().start()
    with cluster.admin() as conn:
        conn.execute(f"CREATE ROLE store_canary LOGIN PASSWORD '{canary['password']}'")
        conn.execute("CREATE DATABASE store OWNER store_canary")
    yield cluster
    cluster.destroy()


def _needles(canary: dict) -> list[bytes]:
    values = [canary["tag"], canary["token"], canary["password"], quote(canary["password"], safe="")]
    return [v.encode() for v in values]


def _leaks(blob: bytes, needles: list[bytes]) -> list[bytes]:
    return [n for n in needles if n in blob]


def _redis_blobs(client: redis.Redis):
    """(key, bytes) for every key and every value in Redis, zlib payloads (RQ job data) inflated."""
    for key in client.scan_iter(count=500):
        kind = client.type(key).decode()
        if kind == "string":
            values = [client.get(key)]
        elif kind == "hash":
            values = [b for kv in client.hgetall(key).items() for b in kv]
        elif kind == "list":
            values = client.lrange(key, 0, -1)
        elif kind == "set":
            values = list(client.smembers(key))
        elif kind == "zset":
            values = [m for m, _ in client.zrange(key, 0, -1, withscores=True)]
        elif kind == "stream":
            values = [b for _id, fields in client.xrange(key) for kv in fields.items() for b in kv]
        else:
            values = [client.dump(key) or b""]
        yield key, key
        for value in values:
            if value is None:
                continue
            yield key, value
            try:
                yield key, zlib.decompress(value)
            except zlib.error:
                pass


def test_canary_token_and_password_appear_nowhere(scram_cluster, canary, service_factory, redis_server, tmp_path):
    url = scram_cluster.url("store", "store_canary", canary["password"])
    bar = {
        "provider": "cy",
        "symbol": "CY",
        "interval": "1m",
        "ts": "2024-02-05T00:00:00Z",
        "open": 1.0,
        "high": 2.0,
        "low": 0.5,
        "close": 1.5,
        "volume": 1.0,
    }
    (tmp_path / "bars.ndjson").write_text(json.dumps(bar) + "\n" + "not json\n")
    with pytest.raises(psycopg.OperationalError):  # the password is really checked
        psycopg.connect(scram_cluster.url("store", "store_canary", "wrong-password"), connect_timeout=5)

    svc = service_factory(
        url,
        env={
            "ADMIN_TOKEN": canary["token"],
            "LOG_LEVEL": "DEBUG",
            "EVENT_BUS_BACKEND": "redis",
            "DB_LOCK_TIMEOUT_MS": "1500",
            "BACKFILL_SOURCE_DIR": str(tmp_path),
        },
        start=False,
    )
    svc.session.headers["Authorization"] = f"Bearer {canary['token']}"
    svc.start()

    # A job that fails inside the database (lock timeout), then the full happy cycle.
    with MigrationBlocker(url):
        failed = svc.wait_job(svc.trigger("/migrate"), timeout=60)
    assert failed["status"] == "failed" and failed["error"], failed
    svc.restart({"DB_LOCK_TIMEOUT_MS": None})  # the rest runs under the store's own lock timeout
    applied = svc.wait_job(svc.trigger("/migrate"), timeout=60)
    assert applied["status"] == "success", applied["error"]
    for path, body in (
        ("/migrate", {"dry_run": True}),
        ("/drift/check", None),
        ("/retention/apply", {"dry_run": True}),
        ("/refresh/aggregate", None),
        ("/backfill/bars_ohlcv", {"source": "bars.ndjson", "max_bad_rows": 1}),
    ):
        resp = svc.post(path, body)
        assert resp.status_code == 202, (path, resp.text)
        svc.wait_job(resp.json()["run_id"], timeout=60)
    done = svc.get("/jobs?limit=1").json()["jobs"][0]["run_id"]
    assert svc.post(f"/jobs/{done}/cancel").status_code == 409
    # Near misses and a token in the query string are refused without echoing them.
    for header in (f"Bearer {canary['token']}x", f"Basic {canary['token']}", f"bearer  {canary['token'][:-1]}"):
        assert requests.get(svc.url + "/jobs", headers={"Authorization": header}, timeout=5).status_code == 401
    assert requests.get(svc.url + f"/jobs?token={canary['token']}", timeout=5).status_code == 401

    # An outage, so connection errors are logged by the API, the pool and the worker.
    scram_cluster.stop("fast")
    wait_for(lambda: requests.get(svc.url + "/readyz", timeout=5).status_code == 503, 15, message="/readyz 503")
    assert svc.post("/migrate", {"dry_run": True}).status_code == 503
    scram_cluster.start()
    wait_for(lambda: requests.get(svc.url + "/readyz", timeout=5).status_code == 200, 20, message="/readyz 200")
    assert svc.run_job("/migrate", {"dry_run": True})["status"] == "success"

    needles = _needles(canary)
    documents = [svc.get(f"/jobs/{j['run_id']}").json() for j in svc.get("/jobs?limit=200").json()["jobs"]]
    assert len(documents) >= 5
    surfaces = {
        "job documents": json.dumps(documents).encode(),
        "job list": svc.get("/jobs?limit=200").content,
        "/metrics": requests.get(svc.url + "/metrics", timeout=5).content,
        "/health": requests.get(svc.url + "/health", timeout=5).content,
        "/drift": svc.get("/drift").content,
        "/retention/policies": svc.get("/retention/policies").content,
        "/backfill": svc.get("/backfill").content,
        "/openapi.json": requests.get(svc.url + "/openapi.json", timeout=5).content,
    }
    client = redis.Redis.from_url(redis_server.url)
    redis_keys = 0
    for key, blob in _redis_blobs(client):
        redis_keys += 1
        assert not _leaks(blob, needles), f"secret in Redis key {key!r}"
    assert redis_keys > 10, "Redis should hold the queue, RQ jobs and metrics"

    svc.stop()  # so every process has written its last lines
    logs = svc.all_logs().encode()
    assert b"job finished" in logs and b'"level": "debug"' in logs
    surfaces["logs (API and worker)"] = logs
    leaks = {name: _leaks(blob, needles) for name, blob in surfaces.items()}
    assert not any(leaks.values()), leaks


def test_the_scanner_finds_a_planted_canary(redis_url, canary):
    """The Redis scan above would see a secret inside an RQ-style compressed payload."""
    client = redis.Redis.from_url(redis_url)
    client.hset("rq:job:planted", mapping={"data": zlib.compress(canary["token"].encode()), "status": "queued"})
    client.xadd("mdp:planted", {"data": json.dumps({"payload": canary["password"]})})
    found = {key for key, blob in _redis_blobs(client) if _leaks(blob, _needles(canary))}
    assert found == {b"rq:job:planted", b"mdp:planted"}

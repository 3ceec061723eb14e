"""Simultaneous identical triggers collapse onto one run."""

from __future__ import annotations

import json
import threading

import psycopg
import pytest
import requests

from tests.support.common import TOKEN

pytestmark = pytest.mark.timeout(120)
N = 30

TRIGGERS = [
    ("/migrate", None),
    ("/migrate", {"dry_run": True}),
    ("/retention/apply", {"table": "bars_ohlcv"}),
    ("/backfill/bars_ohlcv", {"source": "one.ndjson"}),
]
ONE_BAR = {
    "provider": "sf",
    "symbol": "SF",
    "interval": "1m",
    "ts": "2024-02-05T00:00:00Z",
    "open": 1.0,
    "high": 2.0,
    "low": 0.5,
    "close": 1.5,
    "volume": 1.0,
}


def _storm(url: str, body: dict | None) -> list[requests.Response]:
    barrier = threading.Barrier(N)
    out: list = [None] * N

    def one(i: int) -> None:
        with requests.Session() as s:
            s.headers["Authorization"] = f"Bearer {TOKEN}"
            barrier.wait()
            out[i] = s.post(url, json=body, timeout=30)

    threads = [threading.Thread(target=one, args=(i,)) for i in range(N)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    return out


@pytest.mark.parametrize("path,body", TRIGGERS, ids=[f"{p} {b or ''}" for p, b in TRIGGERS])
def test_thirty_simultaneous_triggers_make_one_run(migrated_database_url, service_factory, tmp_path, path, body):
    (tmp_path / "one.ndjson").write_text(json.dumps(ONE_BAR) + "\n")
    # Four API processes, and no worker yet: the run cannot finish (and free the
    # single-flight key) while the triggers arrive, so "one run" is exact.
    env = {"WEB_CONCURRENCY": "4", "BACKFILL_SOURCE_DIR": str(tmp_path)}
    svc = service_factory(migrated_database_url, env=env, start=False).start_api()
    responses = _storm(svc.url + path, body)
    assert [r.status_code for r in responses] == [202] * N, [r.text for r in responses if r.status_code != 202]
    run_ids = {r.json()["run_id"] for r in responses}
    assert len(run_ids) == 1, run_ids
    assert sum(r.json()["new"] for r in responses) == 1
    with psycopg.connect(migrated_database_url) as conn:
        assert conn.execute("SELECT count(*) FROM store_jobs").fetchone()[0] == 1
    svc.start_worker()
    (run_id,) = run_ids
    assert svc.wait_job(run_id)["status"] == "success"

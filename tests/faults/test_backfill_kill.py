"""SIGKILL of the worker in the middle of a backfill, then a re-run: every row exactly once.

The load is held mid-file by a real lock wait: the source spans two months, the test
makes the first month's partitions and holds the advisory lock partition DDL takes, so
the job commits the first month's batches and then waits to create the second month's
partitions. It is killed there.
"""

from __future__ import annotations

import json
import signal
from datetime import UTC, datetime, timedelta

import psycopg
import pytest

from app.timeseries import partitions
from tests.support.common import wait_for
from tests.support.faults import BLOCKABLE_ENV, job_sessions, wait_blocked
from tests.support.service import LOSS_ENV, NORMAL_LOSS_ENV

pytestmark = pytest.mark.timeout(150)
FEB, AUG = datetime(2024, 2, 5, tzinfo=UTC), datetime(2024, 8, 5, tzinfo=UTC)
PER_MONTH = 3000


def _rows() -> list[dict]:
    out = []
    for start in (FEB, AUG):
        for i in range(PER_MONTH):
            n = len(out)
            out.append(
                {
                    "provider": "fault",
                    "symbol": ("kx1", "kx2")[i % 2],
                    "interval": "1m",
                    "ts": (start + timedelta(minutes=i // 2)).strftime("%Y-%m-%dT%H:%M:%SZ"),
                    "open": 1.0,
                    "high": 2.0,
                    "low": 0.5,
                    "close": 1.5,
                    "volume": float(n),
                }
            )
    return out


def _table(url: str) -> tuple:
    with psycopg.connect(url) as conn:
        return conn.execute(
            "SELECT count(*), count(DISTINCT (symbol, ts)), coalesce(sum(volume), 0) FROM bars_ohlcv WHERE provider = 'fault'"
        ).fetchone()


def test_sigkill_mid_backfill_then_rerun_lands_every_row_once(migrated_database_url, service_factory, tmp_path):
    url, rows = migrated_database_url, _rows()
    source = tmp_path / "two_months.ndjson"
    source.write_text("".join(json.dumps(r) + "\n" for r in rows))
    with psycopg.connect(url, autocommit=True) as conn:
        partitions.ensure_range(conn, "bars_ohlcv", FEB, FEB + timedelta(days=3))
        oid = conn.execute("SELECT 'bars_ohlcv'::regclass::oid::int").fetchone()[0]
    # Heartbeat 1 s, lost after 6 s (LOSS_ENV); the store's defaults are covered by
    # test_worker_death.
    svc = service_factory(url, env={**BLOCKABLE_ENV, **LOSS_ENV, "BACKFILL_SOURCE_DIR": str(tmp_path)})
    worker = svc.workers[0]
    body = {"source": source.name, "batch_rows": 250}

    with psycopg.connect(url, autocommit=True) as holder:
        holder.execute("SELECT pg_advisory_lock(%s, %s)", (partitions.LOCK_CLASS, oid))
        run_id = svc.trigger("/backfill/bars_ohlcv", body)
        wait_blocked(url, run_id)
        # the first month's batches commit (the last may still be finishing), the second waits
        wait_for(lambda: _table(url)[0] == PER_MONTH, 30, message="the first month to be committed")
        committed = _table(url)
        worker.send_signal(signal.SIGKILL)
        worker.wait(10)
        assert all(w.poll() is not None for w in svc.workers)
    wait_for(lambda: not job_sessions(url, run_id), 30, message="the killed job's sessions to end")
    assert _table(url) == committed, "nothing more landed after the kill"

    lost = svc.wait_job(run_id, timeout=90)  # no worker alive: the API's sweepers report it
    assert lost["status"] == "failed" and "worker lost" in lost["error"], lost

    svc.restart(NORMAL_LOSS_ENV)  # a fresh worker; the re-run is not about losing one
    doc = svc.wait_job(svc.trigger("/backfill/bars_ohlcv", body), timeout=90)
    assert doc["status"] == "success", doc["error"]
    assert doc["result"]["resumed_from"]["run_id"] == run_id
    expected_volume = sum(r["volume"] for r in rows)
    assert _table(url) == (2 * PER_MONTH, 2 * PER_MONTH, expected_volume)

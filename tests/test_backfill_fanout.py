"""Many files in one backfill (app/jobs/fanout.py) through the real service: a parent run and
one child run per file, spread over every worker; cancel, re-trigger, a killed worker.

Files are laid out as Polygon publishes its flat-file minute aggregates (one gzip CSV per
trading day, `window_start` in epoch nanoseconds).
"""

from __future__ import annotations

import gzip
import os
import signal
from datetime import UTC, datetime, timedelta
from pathlib import Path

import psycopg
import pytest

from app.timeseries import partitions
from tests.support.common import wait_for

pytestmark = pytest.mark.slow

DAY0 = datetime(2024, 3, 1, 14, 30, tzinfo=UTC)
HEADER = "ticker,volume,open,close,high,low,window_start,transactions\n"


def polygon_day(path: Path, day: int, symbols: int, minutes: int) -> int:
    """One trading day of minute aggregates; returns the row count."""
    start = DAY0 + timedelta(days=day)
    lines = [HEADER]
    for m in range(minutes):
        ns = int((start + timedelta(minutes=m)).timestamp()) * 1_000_000_000
        for s in range(symbols):
            o = 100 + s + (m % 30) * 0.01
            lines.append(f"T{s:03d},{1000 + m},{o:.2f},{o + 0.05:.2f},{o + 0.1:.2f},{o - 0.1:.2f},{ns},{m % 7}\n")
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(gzip.compress("".join(lines).encode(), compresslevel=1))
    return symbols * minutes


@pytest.fixture
def source_dir(tmp_path) -> Path:
    path = tmp_path / "backfill"
    path.mkdir()
    return path


def make_days(source_dir: Path, n: int, symbols: int = 20, minutes: int = 150) -> int:
    return sum(
        polygon_day(source_dir / "polygon" / f"2024-03-{d + 1:02d}.csv.gz", d, symbols, minutes) for d in range(n)
    )


BODY = {"source": "polygon/2024-03-*.csv.gz", "preset": "polygon_aggs", "interval": "1m", "batch_rows": 500}


@pytest.fixture
def blocker(database_url):
    """A session of the test's own, whose open transaction is rolled back at the end."""
    with psycopg.connect(database_url) as conn:
        yield conn
        conn.rollback()


def hold_rows(blocker: psycopg.Connection, url: str, days: range, minute: int) -> None:
    """Stop the child loading each of these days (make_days' files) at `minute`, however
    fast the machine: that minute's first row, inserted in `blocker`'s open transaction.
    A unique-key check waits for the transaction that inserted the key, so the child waits
    there, with the batches before it committed and in its progress, until `blocker`
    rolls back. The days' partitions are made first, so the pending row holds no lock
    that creating them would need."""
    starts = [DAY0 + timedelta(days=d) for d in days]
    with psycopg.connect(url, autocommit=True) as conn:
        partitions.ensure_days(conn, "bars_ohlcv", starts, grain=timedelta(minutes=1))
    for start in starts:
        blocker.execute(
            """INSERT INTO bars_ohlcv (provider, symbol, interval, ts, open, high, low, close, volume)
               VALUES ('polygon', 'T000', '1m', %s, 1, 1, 1, 1, 1)""",
            (start + timedelta(minutes=minute),),
        )


def table_counts(url: str) -> tuple[int, int]:
    with psycopg.connect(url) as conn:
        return conn.execute(
            "SELECT count(*), count(DISTINCT (provider, symbol, interval, ts)) FROM bars_ohlcv"
        ).fetchone()


def children(svc, parent: str) -> list[dict]:
    resp = svc.get(f"/jobs?parent={parent}&limit=200")
    assert resp.status_code == 200, resp.text
    return resp.json()["jobs"]


@pytest.fixture
def svc2(database_url, service_factory, source_dir):
    service = service_factory(database_url, env={"BACKFILL_SOURCE_DIR": str(source_dir)}, workers=2)
    service.migrate()
    return service


def test_a_glob_of_12_files_runs_on_both_workers_and_lands_every_row_once(svc2, source_dir, database_url):
    total = make_days(source_dir, 12)
    parent = svc2.trigger("/backfill/bars_ohlcv", BODY)
    doc = svc2.wait_job(parent, timeout=240)
    assert doc["status"] == "success", doc
    assert doc["children"]["by_status"] == {"success": 12} and doc["children"]["rows_written"] == total
    kids = children(svc2, parent)
    assert len(kids) == 12 and all(k["params"]["parent"] == parent and k["status"] == "success" for k in kids)
    assert sorted(k["params"]["source"] for k in kids) == [f"polygon/2024-03-{d:02d}.csv.gz" for d in range(1, 13)]
    one = svc2.get(f"/jobs/{kids[0]['run_id']}").json()
    assert one["parent"] == parent
    assert table_counts(database_url) == (total, total)
    # both workers ran children at the same time (the ledger: overlapping runs on different workers)
    with psycopg.connect(database_url) as conn:
        spans = conn.execute(
            "SELECT worker, started_at, finished_at FROM store_jobs WHERE params->>'parent' = %s", (parent,)
        ).fetchall()
    assert len({w for w, _, _ in spans}) == 2
    assert any(a[0] != b[0] and a[1] < b[2] and b[1] < a[2] for i, a in enumerate(spans) for b in spans[i + 1 :]), spans
    # the same trigger again: every file is skipped (already loaded by this group, unchanged)
    again = svc2.wait_job(svc2.trigger("/backfill/bars_ohlcv", BODY), timeout=120)
    assert again["status"] == "success" and again["children"]["skipped"] == 12, again
    assert table_counts(database_url) == (total, total)


def test_cancel_mid_way_then_trigger_again_loads_every_row_exactly_once(
    database_url, service_factory, source_dir, blocker
):
    svc = service_factory(database_url, env={"BACKFILL_SOURCE_DIR": str(source_dir)}, workers=1)
    svc.migrate()
    total = make_days(source_dir, 12)
    # One worker runs the children in file order: the first file loads, the second waits
    # halfway through until after the cancel, so the cancel always comes mid-way.
    hold_rows(blocker, database_url, range(1, 12), minute=75)
    parent = svc.trigger("/backfill/bars_ohlcv", BODY)
    wait_for(lambda: any(k["status"] == "success" for k in children(svc, parent)), 120, 0.2, "a first file loaded")
    resp = svc.post(f"/jobs/{parent}/cancel")
    assert resp.status_code == 202, resp.text
    doc = svc.wait_job(parent, timeout=120)
    assert doc["status"] == "cancelled", doc
    kids = children(svc, parent)
    finished = {k["params"]["source"] for k in kids if k["status"] == "success"}
    assert finished == {"polygon/2024-03-01.csv.gz"}, kids
    assert all(k["status"] in ("success", "cancelled") for k in kids), kids
    with psycopg.connect(database_url) as conn:
        written_before = conn.execute("SELECT count(*) FROM bars_ohlcv").fetchone()[0]
    assert written_before < total
    blocker.rollback()

    second = svc.trigger("/backfill/bars_ohlcv", BODY)
    assert second != parent
    doc = svc.wait_job(second, timeout=240)
    assert doc["status"] == "success", doc
    kids = children(svc, second)
    skipped = {k["params"]["source"] for k in kids if (k["result"] or {}).get("skipped")}
    assert skipped == finished
    assert table_counts(database_url) == (total, total)
    # every row was written exactly once over both parents (none rewritten, none twice)
    with psycopg.connect(database_url) as conn:
        assert (
            conn.execute("SELECT count(*) FROM bars_ohlcv WHERE updated_at IS DISTINCT FROM created_at").fetchone()[0]
            == 0
        )


def test_a_killed_worker_fails_its_child_and_the_parent_names_it_then_a_retrigger_completes(
    database_url, service_factory, source_dir, blocker
):
    svc = service_factory(
        database_url, env={"BACKFILL_SOURCE_DIR": str(source_dir), "JOB_LOST_AFTER_SECONDS": "4"}, workers=1
    )
    svc.migrate()
    total = make_days(source_dir, 3)
    body = {**BODY, "batch_rows": 100}
    hold_rows(blocker, database_url, range(3), minute=75)  # the first child waits halfway through its file
    parent = svc.trigger("/backfill/bars_ohlcv", body)

    def running_child():
        for k in children(svc, parent):
            if k["status"] == "running" and (k["progress"] or {}).get("rows_written", 0) > 0:
                return k
        return None

    victim = wait_for(running_child, 120, 0.1, "a child writing rows")
    progress = victim["progress"]
    for name in (
        "phase",
        "bytes_read",
        "bytes_total",
        "percent",
        "rows_read",
        "rows_written",
        "rows_unchanged",
        "rows_rejected",
        "rows_per_s",
        "eta_s",
    ):
        assert name in progress, progress
    assert 0 < progress["rows_written"] <= 75 * 20, progress  # halfway: the rows before the held one
    os.killpg(svc.workers[0].pid, signal.SIGKILL)
    svc.workers[0].wait(10)
    lost = svc.wait_job(victim["run_id"], timeout=60)
    assert lost["status"] == "failed" and "worker lost" in lost["error"], lost
    # Released: the dead worker's session ends without committing its batch, and nothing
    # waits on the pending rows any more.
    blocker.rollback()
    svc.start_worker()  # the queued children run; the parent ends failed naming the lost one
    doc = svc.wait_job(parent, timeout=180)
    assert doc["status"] == "failed", doc
    assert doc["error"].startswith("1 of 3 files failed: " + victim["params"]["source"] + ": worker lost"), doc
    # POST /jobs/<parent>/retry: a new parent over the same files (the same as triggering again)
    resp = svc.post(f"/jobs/{parent}/retry")
    assert resp.status_code == 202 and resp.json()["retry_of"] == parent, resp.text
    again = svc.wait_job(resp.json()["run_id"], timeout=180)
    assert again["status"] == "success" and again["retry_of"] == parent, again
    assert again["children"]["skipped"] == 2
    resumed = [k for k in children(svc, again["run_id"]) if k["params"]["source"] == victim["params"]["source"]]
    assert resumed[0]["result"]["resumed_from"] is not None
    assert table_counts(database_url) == (total, total)

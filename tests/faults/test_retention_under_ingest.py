"""Retention on a table that is being written to: no insert fails, no deadlock, exact result."""

from __future__ import annotations

import threading
from datetime import UTC, datetime, timedelta

import psycopg
import pytest

from app.timeseries import partitions
from tests.support.bars import bar_series, insert_bars
from tests.support.common import wait_for

pytestmark = pytest.mark.timeout(150)
UTC = UTC
DAY = timedelta(days=1)
WRITERS = 4


class Writer(threading.Thread):
    """Live ingest: small autocommit INSERTs of fresh bars, as fast as they go, until stopped."""

    def __init__(self, database_url: str, index: int, start_at: datetime):
        super().__init__(name=f"writer-{index}", daemon=True)
        self.url, self.symbol, self.ts = database_url, f"LIVE{index}", start_at
        self.stop = threading.Event()
        self.written: int = 0
        self.errors: list[str] = []

    def run(self) -> None:
        with psycopg.connect(self.url, autocommit=True, application_name=self.name) as conn:
            while not self.stop.is_set():
                rows = []
                for _ in range(5):
                    self.ts += timedelta(seconds=1)
                    rows.append(("live", self.symbol, "1s", self.ts, 1.0, 2.0, 0.5, 1.5, 10.0))
                try:
                    self.written += insert_bars(conn, rows)
                except psycopg.Error as exc:
                    self.errors.append(f"{type(exc).__name__}: {exc}")


def test_retention_while_rows_are_inserted(migrated_database_url, service_factory):
    url = migrated_database_url
    now = datetime.now(UTC).replace(minute=0, second=0, microsecond=0)
    with psycopg.connect(url, autocommit=True) as conn:
        partitions.ensure_range(conn, "bars_ohlcv", now - 61 * DAY, now + DAY)
        history = bar_series("AAPL", now - 60 * DAY, now, timedelta(hours=1)) + bar_series(
            "MSFT", now - 60 * DAY, now, timedelta(hours=2), provider="other"
        )
        insert_bars(conn, history)
    svc = service_factory(url)
    assert svc.put("/retention/policies/bars_ohlcv", {"retain": "30 days"}).status_code == 200

    writers = [Writer(url, i, now - timedelta(hours=6)) for i in range(WRITERS)]
    for w in writers:
        w.start()
    try:
        wait_for(lambda: all(w.written >= 50 for w in writers), 20, message="every writer to be writing")
        doc = svc.wait_job(svc.trigger("/retention/apply", {"table": "bars_ohlcv"}), timeout=90)
        marks = [w.written for w in writers]
        wait_for(
            lambda: all(w.written > m for w, m in zip(writers, marks, strict=True)),
            20,
            message="the writers to go on after retention",
        )
    finally:
        for w in writers:
            w.stop.set()
        for w in writers:
            w.join(30)

    assert [e for w in writers for e in w.errors] == [], "an insert failed during retention"
    assert doc["status"] == "success", doc["error"]
    result = doc["result"]["tables"]["bars_ohlcv"]
    cutoff = datetime.fromisoformat(result["cutoff"])
    older = [r for r in history if r[3] < cutoff]
    assert result["rows_removed"] == len(older) > 0
    with psycopg.connect(url, autocommit=True) as conn:
        assert conn.execute("SELECT count(*) FROM bars_ohlcv WHERE ts < %s", (cutoff,)).fetchone()[0] == 0
        kept = conn.execute("SELECT count(*) FROM bars_ohlcv WHERE provider <> 'live'").fetchone()[0]
        live = conn.execute("SELECT count(*) FROM bars_ohlcv WHERE provider = 'live'").fetchone()[0]
    assert kept == len(history) - len(older)
    assert live == sum(w.written for w in writers)

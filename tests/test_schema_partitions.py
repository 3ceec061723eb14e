"""Plain-Postgres partitions: ensure_range, the DEFAULT-partition sweep, concurrency, transactions."""

from __future__ import annotations

import concurrent.futures
import threading
from datetime import UTC, datetime, timedelta

import psycopg
import pytest

from app.timeseries import partitions
from tests.support.bars import bar_series, insert_bars
from tests.support.common import wait_for

UTC = UTC
WEEK = timedelta(days=7)


def _count(conn, relation):
    return conn.execute(f"SELECT count(*) FROM {relation}").fetchone()[0]


def test_ensure_range_creates_epoch_aligned_partitions_once(conn):
    start, end = datetime(2010, 3, 3, 12, tzinfo=UTC), datetime(2010, 4, 20, tzinfo=UTC)
    created = partitions.ensure_range(conn, "bars_ohlcv", start, end)
    parts = [p for p in partitions.list_partitions(conn, "bars_ohlcv") if p.lo.year == 2010]
    assert created == len(parts) == 8
    assert parts[0].lo <= start and parts[-1].hi > end
    assert all(p.hi - p.lo == WEEK for p in parts)
    assert all(b.lo == a.hi for a, b in zip(parts, parts[1:], strict=False))  # contiguous
    assert parts[0].lo.weekday() == 3  # epoch-aligned weeks start on Thursdays, like TimescaleDB
    assert partitions.ensure_range(conn, "bars_ohlcv", start, end) == 0
    # rows of that range now go to real partitions, never to DEFAULT
    insert_bars(conn, bar_series("AAPL", start, end, timedelta(hours=6)))
    assert _count(conn, "bars_ohlcv_default") == 0


def test_ensure_range_moves_rows_already_in_the_default_partition(conn):
    old = bar_series("IBM", datetime(2001, 1, 1, tzinfo=UTC), datetime(2001, 1, 20, tzinfo=UTC), timedelta(hours=1))
    insert_bars(conn, old)
    assert _count(conn, "bars_ohlcv_default") == len(old)
    before = conn.execute("SELECT sum(close), count(*) FROM bars_ohlcv").fetchone()
    assert (
        partitions.ensure_range(conn, "bars_ohlcv", datetime(2001, 1, 1, tzinfo=UTC), datetime(2001, 1, 10, tzinfo=UTC))
        == 2
    )
    # the rows of 2001-01-01 .. 2001-01-11 moved; the later ones stay in DEFAULT until swept
    left = _count(conn, "bars_ohlcv_default")
    assert 0 < left < len(old)
    assert conn.execute("SELECT sum(close), count(*) FROM bars_ohlcv").fetchone() == before
    assert conn.execute("SELECT min(ts) FROM bars_ohlcv_default").fetchone()[0] >= datetime(2001, 1, 11, tzinfo=UTC)


def test_sweep_default_empties_the_default_partition_except_expired_and_infinite_rows(conn):
    rows = (
        bar_series("A", datetime(1995, 6, 1, tzinfo=UTC), datetime(1995, 7, 1, tzinfo=UTC), timedelta(hours=8))
        + bar_series("B", datetime(2300, 1, 1, tzinfo=UTC), datetime(2300, 1, 3, tzinfo=UTC), timedelta(hours=8))
        + bar_series("C", datetime(1980, 1, 1, tzinfo=UTC), datetime(1980, 1, 2, tzinfo=UTC), timedelta(hours=8))
    )
    insert_bars(conn, rows)
    conn.execute("INSERT INTO bars_ohlcv (provider, symbol, \"interval\", ts) VALUES ('p', 'INF', '1m', 'infinity')")
    out = partitions.sweep_default(conn, "bars_ohlcv", not_before=datetime(1990, 1, 1, tzinfo=UTC))
    assert out["rows_moved"] == len(rows) - 3 and out["partitions_created"] == 5 + 1
    left = conn.execute("SELECT symbol FROM bars_ohlcv_default ORDER BY symbol").fetchall()
    assert [r[0] for r in left] == ["C", "C", "C", "INF"]  # older than the cutoff: retention deletes them
    assert _count(conn, "bars_ohlcv") == len(rows) + 1


def test_concurrent_calls_create_each_partition_exactly_once(migrated_database_url):
    start, end = datetime(2015, 1, 1, tzinfo=UTC), datetime(2015, 6, 1, tzinfo=UTC)

    def work(_):
        with psycopg.connect(migrated_database_url, autocommit=True) as c:
            return partitions.ensure_range(c, "bars_ohlcv", start, end)

    with concurrent.futures.ThreadPoolExecutor(4) as pool:
        created = list(pool.map(work, range(4)))
    with psycopg.connect(migrated_database_url, autocommit=True) as c:
        parts = [p for p in partitions.list_partitions(c, "bars_ohlcv") if p.lo.year in (2014, 2015)]
    assert sum(created) == len(parts) == 22
    assert len({p.name for p in parts}) == len(parts)


def test_inside_a_transaction_partitions_appear_at_commit(migrated_database_url):
    day = datetime(2012, 2, 2, tzinfo=UTC)
    with psycopg.connect(migrated_database_url) as c, psycopg.connect(migrated_database_url, autocommit=True) as other:
        assert c.info.transaction_status == psycopg.pq.TransactionStatus.IDLE
        c.execute("SELECT 1")  # now inside a transaction
        assert partitions.ensure_range(c, "bars_ohlcv", day, day) == 1
        assert not [p for p in partitions.list_partitions(other, "bars_ohlcv") if p.lo.year == 2012]
        insert_bars(c, [("p", "X", "1m", day, 1, 1, 1, 1, 1)])
        c.commit()
        parts = [p for p in partitions.list_partitions(other, "bars_ohlcv") if p.lo.year == 2012]
        assert len(parts) == 1
        assert (
            other.execute("SELECT tableoid::regclass::text FROM bars_ohlcv WHERE symbol = 'X'").fetchone()[0]
            == parts[0].name
        )


def test_ensure_range_rejects_unknown_tables_and_absurd_ranges(conn):
    now = datetime.now(UTC)
    with pytest.raises(ValueError):
        partitions.ensure_range(conn, "store_jobs", now, now)
    with pytest.raises(ValueError):
        partitions.ensure_range(conn, "bars_ohlcv", now, now - timedelta(days=1))
    with pytest.raises(ValueError):
        partitions.ensure_range(conn, "bars_ohlcv", datetime(1100, 1, 1, tzinfo=UTC), now)


def test_ingest_keeps_flowing_while_partitions_are_created(migrated_database_url):
    """Partition creation takes no lock on the parent that conflicts with INSERT into other partitions."""
    now = datetime.now(UTC).replace(microsecond=0)
    stop = threading.Event()
    written, errors = [], []

    def ingest():
        with psycopg.connect(migrated_database_url, autocommit=True) as c:
            i = 0
            while not stop.is_set():
                try:
                    insert_bars(c, [("live", "AAPL", "1s", now + timedelta(seconds=i), 1, 1, 1, 1, 1)])
                    written.append(i)
                except psycopg.Error as exc:  # pragma: no cover - the assertion below reports it
                    errors.append(exc)
                i += 1

    thread = threading.Thread(target=ingest)
    thread.start()
    try:
        wait_for(lambda: len(written) > 5, 30, message="ingest to start")
        with psycopg.connect(migrated_database_url, autocommit=True, options="-c lock_timeout=2000") as c:
            created = partitions.ensure_range(
                c, "bars_ohlcv", datetime(2005, 1, 1, tzinfo=UTC), datetime(2006, 1, 1, tzinfo=UTC)
            )
        mark = len(written)
        wait_for(lambda: len(written) > mark + 5, 30, message="ingest to continue")
    finally:
        stop.set()
        thread.join(10)
    assert created == 53
    assert errors == []

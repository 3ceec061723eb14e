"""The backfill write path (app/backfill/loader.py) on a real, migrated database.

COPY into staging and a set-based merge: new keys take the plain INSERT, existing or
repeated keys the upsert (last line of the file wins), identical rows are left alone,
and whatever the caller adds commits or rolls back with the batch.
"""

from __future__ import annotations

import io
import json

import psycopg
import pytest

from app.backfill.loader import Loader, MergePolicy
from app.backfill.rows import Batch, Reader


def chunks(*rows) -> Batch:
    """The rows as one batch, as the reader makes it."""
    data = b"".join(json.dumps(r).encode() + b"\n" for r in rows)
    reader = Reader(io.BufferedReader(io.BytesIO(data)), "ndjson", batch_rows=10_000, max_bad_rows=0)
    [batch] = [b for b in reader.batches() if b.rows]
    return batch


def bar(symbol: str, minute: int, close: float = 1.5, **kw) -> dict:
    return {
        "provider": "p",
        "symbol": symbol,
        "interval": "1m",
        "ts": f"2024-05-01T10:{minute:02d}:00Z",
        "open": 1.0,
        "high": 2.0,
        "low": 0.5,
        "close": close,
        "volume": 10,
        **kw,
    }


def table(conn) -> list[tuple]:
    return conn.execute(
        "SELECT symbol, to_char(ts AT TIME ZONE 'UTC', 'HH24:MI'), close FROM bars_ohlcv ORDER BY 1, 2"
    ).fetchall()


def test_new_rows_take_the_plain_insert(conn):
    loader = Loader(conn)
    assert loader.write(chunks(bar("a", 0), bar("a", 1), bar("b", 0))) == 3
    assert table(conn) == [("A", "10:00", 1.5), ("A", "10:01", 1.5), ("B", "10:00", 1.5)]
    assert loader.policy.upserts == 0


def test_loading_the_same_rows_again_changes_nothing_not_even_updated_at(conn):
    loader = Loader(conn)
    rows = [bar("a", m) for m in range(5)]
    loader.write(chunks(*rows))
    before = conn.execute("SELECT ctid, updated_at FROM bars_ohlcv ORDER BY ts").fetchall()
    assert loader.write(chunks(*rows)) == 0
    assert loader.policy.upserts == 1
    assert conn.execute("SELECT ctid, updated_at FROM bars_ohlcv ORDER BY ts").fetchall() == before
    assert conn.execute("SELECT count(*) FROM bars_ohlcv").fetchone()[0] == 5


def test_changed_rows_are_updated_and_new_ones_inserted_in_one_batch(conn):
    loader = Loader(conn)
    loader.write(chunks(bar("a", 0), bar("a", 1)))
    assert loader.write(chunks(bar("a", 0), bar("a", 1, close=1.75), bar("a", 2))) == 2
    assert table(conn) == [("A", "10:00", 1.5), ("A", "10:01", 1.75), ("A", "10:02", 1.5)]


def test_a_key_repeated_in_a_batch_keeps_the_last_line(conn):
    loader = Loader(conn)
    # 'a' and 'A' are the same symbol once upper-cased
    assert loader.write(chunks(bar("a", 0, close=1.1), bar("b", 0), bar("A", 0, close=1.9))) == 2
    assert table(conn) == [("A", "10:00", 1.9), ("B", "10:00", 1.5)]


def test_after_a_conflict_the_next_batches_go_straight_to_the_upsert(conn):
    policy = MergePolicy()
    loader = Loader(conn, policy=policy)
    loader.write(chunks(bar("a", 0)))
    loader.write(chunks(bar("a", 0), bar("a", 1)))  # conflicts
    loader.write(chunks(bar("a", 2)))  # new, but after a conflict
    assert policy.upserts == 2
    assert [r[1] for r in table(conn)] == ["10:00", "10:01", "10:02"]


def test_what_the_caller_adds_commits_with_the_batch_or_rolls_it_back(conn):
    conn.execute("CREATE TABLE marks (n int)")
    loader = Loader(conn)

    def then(c, written):
        c.execute("INSERT INTO marks VALUES (%s)", (written,))

    loader.write(chunks(bar("a", 0)), then)
    assert conn.execute("SELECT n FROM marks").fetchall() == [(1,)]

    def fail(c, written):
        then(c, written)
        raise RuntimeError("crash after the merge")

    with pytest.raises(RuntimeError):
        loader.write(chunks(bar("b", 0)), fail)
    assert table(conn) == [("A", "10:00", 1.5)]
    assert conn.execute("SELECT n FROM marks").fetchall() == [(1,)]
    assert loader.write(chunks(bar("b", 0)), then) == 1  # the staging table was emptied


def test_a_row_the_table_refuses_fails_the_whole_batch(conn):
    loader = Loader(conn)
    conn.execute("ALTER TABLE bars_ohlcv ADD CONSTRAINT test_small_volume CHECK (volume < 100)")
    with pytest.raises(psycopg.errors.CheckViolation):
        loader.write(chunks(bar("a", 0), bar("a", 1, volume=500)))
    assert table(conn) == []


# -- straight into a partition -------------------------------------------------------------
def _partition_for_may_2024(conn) -> str:
    from datetime import UTC, datetime, timedelta

    from app.timeseries import partitions

    partitions.ensure_days(conn, "bars_ohlcv", [datetime(2024, 5, 1, tzinfo=UTC)], grain=timedelta(minutes=1))
    name = partitions.holding(
        conn, "bars_ohlcv", datetime(2024, 5, 1, 10, tzinfo=UTC), datetime(2024, 5, 1, 11, tzinfo=UTC)
    )
    assert name is not None
    return name


def _invalidations(conn) -> list[tuple]:
    return conn.execute(
        "SELECT aggregate, bucket FROM store_rollup_invalidations GROUP BY 1, 2 ORDER BY 1, 2"
    ).fetchall()


def test_a_batch_of_one_partition_is_copied_straight_in_and_invalidates_as_the_trigger_would(conn):
    part = _partition_for_may_2024(conn)
    rows = [bar(s, m) for s in ("a", "b") for m in range(0, 60, 7)]
    policy = MergePolicy()
    loader = Loader(conn, policy=policy)
    assert loader.write(chunks(*rows)) == len(rows)
    assert policy.direct_batches == 1 and policy.upserts == 0
    assert conn.execute(f'SELECT count(*) FROM "{part}"').fetchone()[0] == len(rows)
    direct = _invalidations(conn)
    assert direct  # bars_ohlcv_1h and bars_ohlcv_1d buckets
    stored = conn.execute(
        "SELECT provider, symbol, interval, ts, open, high, low, close, volume FROM bars_ohlcv ORDER BY 2, 4"
    )
    stored = stored.fetchall()

    # the same rows through the parent: the trigger records the invalidations
    conn.execute("TRUNCATE bars_ohlcv, store_rollup_invalidations")
    policy.direct = False
    assert loader.write(chunks(*rows)) == len(rows)
    assert policy.direct_batches == 1
    assert _invalidations(conn) == direct
    again = conn.execute(
        "SELECT provider, symbol, interval, ts, open, high, low, close, volume FROM bars_ohlcv ORDER BY 2, 4"
    )
    assert again.fetchall() == stored


def test_a_direct_batch_with_existing_or_repeated_keys_takes_the_upsert_and_the_last_line_wins(conn):
    _partition_for_may_2024(conn)
    policy = MergePolicy()
    loader = Loader(conn, policy=policy)
    loader.write(chunks(bar("a", 0), bar("a", 1)))
    assert policy.direct_batches == 1
    # existing keys: the COPY is refused whole, the upsert changes one row and adds one
    assert loader.write(chunks(bar("a", 0), bar("a", 1, close=1.75), bar("a", 2))) == 2
    assert policy.direct_batches == 1 and policy.upserts == 1
    assert table(conn) == [("A", "10:00", 1.5), ("A", "10:01", 1.75), ("A", "10:02", 1.5)]
    fresh = MergePolicy()
    assert Loader(conn, policy=fresh).write(chunks(bar("c", 5, close=1.1), bar("C", 5, close=1.9))) == 1
    assert fresh.direct_batches == 0 and fresh.upserts == 1
    assert ("C", "10:05", 1.9) in table(conn)


def test_a_batch_over_two_partitions_or_the_default_one_goes_through_staging(conn):
    _partition_for_may_2024(conn)
    policy = MergePolicy()
    loader = Loader(conn, policy=policy)
    # 2024-05-01 has a partition, 2019 only the DEFAULT one
    assert loader.write(chunks(bar("a", 0), bar("a", 1, ts="2019-05-01T10:00:00Z"))) == 2
    assert loader.write(chunks(bar("b", 1, ts="2019-05-01T10:00:00Z"))) == 1
    assert policy.direct_batches == 0 and policy.upserts == 0
    assert conn.execute("SELECT count(*) FROM bars_ohlcv").fetchone()[0] == 3

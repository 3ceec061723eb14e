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
from app.backfill.rows import Reader


def chunks(*rows) -> list[bytes]:
    data = b"".join(json.dumps(r).encode() + b"\n" for r in rows)
    reader = Reader(io.BufferedReader(io.BytesIO(data)), "ndjson", batch_rows=10_000, max_bad_rows=0)
    return [c for b in reader.batches() for c in b.chunks]


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

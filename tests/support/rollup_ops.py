"""The rollup property tests' model (plain Postgres and TimescaleDB share it).

Random sequences of operations on bars_ohlcv over three days from `BASE`: upserts,
updates, moves (a row's time changes, maybe its bucket and partition), deletes, and
refreshes (pending or windowed); after every refresh the refreshed buckets must equal a
GROUP BY computed in Python from the source rows (`check_refresh`).
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import psycopg
from hypothesis import strategies as st

from app.timeseries import partitions, rollups
from tests.support.bars import reference_rollup, rollup_rows, source_rows

BASE = datetime(2024, 1, 1, tzinfo=UTC)
SPAN_MIN = 3 * 24 * 60  # three days of minutes: some rows land in partitions, the last day in DEFAULT
# 1h: a source of bars_ohlcv_1d only (a rollup takes only intervals finer than its bucket)
SERIES = [("p1", "AAPL", "1m"), ("p1", "MSFT", "1m"), ("p2", "AAPL", "5m"), ("p2", "MSFT", "1h")]


price = st.one_of(st.none(), st.integers(-1000, 1000).map(float))
minute = st.integers(0, SPAN_MIN - 1)
bar = st.tuples(st.integers(0, len(SERIES) - 1), minute, price, price, price, price, price)
ops = st.one_of(
    st.tuples(st.just("upsert"), st.lists(bar, min_size=1, max_size=40)),
    st.tuples(st.just("update"), minute, st.integers(1, 600), st.integers(-50, 50)),
    st.tuples(st.just("move"), minute, st.integers(-2000, 2000)),
    st.tuples(st.just("delete"), minute, st.integers(1, 900)),
    st.tuples(st.just("pending"), st.sampled_from(rollups.names_for("bars_ohlcv"))),
    st.tuples(st.just("window"), st.sampled_from(rollups.names_for("bars_ohlcv")), minute, st.integers(1, SPAN_MIN)),
)


def at(m: int) -> datetime:
    return BASE + timedelta(minutes=m)


def apply_op(conn, op) -> None:
    kind = op[0]
    if kind == "upsert":
        rows = {}
        for s, m, o, h, l, c, v in op[1]:
            rows[(s, m)] = (*SERIES[s], at(m), o, h, l, c, v)  # one row per key per statement
        values = ",".join(["(%s,%s,%s,%s,%s::float8,%s::float8,%s::float8,%s::float8,%s::float8)"] * len(rows))
        conn.execute(  # one statement: its transition tables carry many rows, inserted and updated
            'INSERT INTO bars_ohlcv (provider, symbol, "interval", ts, open, high, low, close, volume) '
            f'VALUES {values} ON CONFLICT (provider, symbol, "interval", ts) DO UPDATE '
            "SET open = EXCLUDED.open, high = EXCLUDED.high, low = EXCLUDED.low, close = EXCLUDED.close, "
            "volume = EXCLUDED.volume",
            [v for row in rows.values() for v in row],
        )
    elif kind == "update":
        _, m, length, delta = op
        conn.execute(
            "UPDATE bars_ohlcv SET close = close + %s, volume = coalesce(volume, 0) + 1 WHERE ts >= %s AND ts < %s",
            (float(delta), at(m), at(m + length)),
        )
    elif kind == "move":  # changes a row's bucket (and maybe partition): old and new buckets both change
        _, m, shift = op
        row = conn.execute(
            'SELECT provider, symbol, "interval", ts FROM bars_ohlcv WHERE ts >= %s ORDER BY ts LIMIT 1', (at(m),)
        ).fetchone()
        if row:
            try:
                conn.execute(
                    "UPDATE bars_ohlcv SET ts = ts + %s WHERE provider = %s AND symbol = %s "
                    'AND "interval" = %s AND ts = %s',
                    (timedelta(minutes=shift), *row),
                )
            except psycopg.errors.UniqueViolation:
                pass
    elif kind == "delete":
        _, m, length = op
        conn.execute("DELETE FROM bars_ohlcv WHERE ts >= %s AND ts < %s", (at(m), at(m + length)))


def check_refresh(conn, op) -> None:
    kind, name = op[0], op[1]
    width = rollups.aggregate(name).bucket
    if kind == "pending":
        rollups.refresh_pending(conn, name)
        assert rollup_rows(conn, name) == reference_rollup(source_rows(conn), width)
        assert rollups.pending_invalidations(conn, name) == 0
    else:
        _, _, m, length = op
        out = rollups.refresh(conn, name, at(m), at(m + length))
        lo, hi = datetime.fromisoformat(out["window"]["start"]), datetime.fromisoformat(out["window"]["end"])
        assert lo <= at(m) and hi >= at(m + length) and lo == partitions.align(lo, width)
        expected = reference_rollup(source_rows(conn), width, lo, hi)
        assert rollup_rows(conn, name, lo, hi) == expected
        assert out["rows_written"] == len(expected)

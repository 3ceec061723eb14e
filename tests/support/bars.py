"""bars_ohlcv rows for the time-series tests, and rollups computed in Python to compare with."""

from __future__ import annotations

import psycopg

BAR_COLUMNS = ("provider", "symbol", "interval", "ts", "open", "high", "low", "close", "volume")


def insert_bars(conn: psycopg.Connection, rows) -> int:
    """Plain multi-row INSERTs into bars_ohlcv (as the pipeline does); returns rows written."""
    rows = list(rows)
    with conn.cursor() as cur:
        for i in range(0, len(rows), 1000):
            chunk = rows[i : i + 1000]
            values = ",".join(["(%s,%s,%s,%s,%s,%s,%s,%s,%s)"] * len(chunk))
            cur.execute(
                f'INSERT INTO bars_ohlcv (provider, symbol, "interval", ts, open, high, low, close, volume) '
                f"VALUES {values}",
                [v for row in chunk for v in row],
            )
    return len(rows)


def bar_series(symbol: str, start, end, step, provider: str = "prov", interval: str = "1m"):
    """One bar every `step` in [start, end), prices derived from the index (exact in float)."""
    out, ts, i = [], start, 0
    while ts < end:
        out.append(
            (
                provider,
                symbol,
                interval,
                ts,
                float(i % 97),
                float(i % 97 + 5),
                float(i % 97 - 5),
                float((i * 7) % 89),
                float(i % 13),
            )
        )
        ts += step
        i += 1
    return out


def reference_rollup(rows, width, lo=None, hi=None) -> dict:
    """GROUP BY in Python over source rows: first open, max high, min low, last close, sum volume.

    Only rows whose interval is strictly finer than the bucket count (a rollup's sources:
    no daily bar in an hourly bucket), reckoned from the vocabulary's durations."""
    from app.timeseries.intervals import CANONICAL
    from app.timeseries.partitions import align

    groups: dict = {}
    for provider, symbol, interval, ts, o, h, l, c, v in sorted(rows, key=lambda r: r[3]):
        if CANONICAL[interval] >= width.total_seconds():
            continue
        bucket = align(ts, width)
        if (lo is not None and bucket < lo) or (hi is not None and bucket >= hi):
            continue
        key = (provider, symbol, interval, bucket)
        g = groups.get(key)
        if g is None:
            groups[key] = [o, h, l, c, v]
        else:
            g[1] = h if g[1] is None else (g[1] if h is None else max(g[1], h))
            g[2] = l if g[2] is None else (g[2] if l is None else min(g[2], l))
            g[3] = c
            g[4] = v if g[4] is None else (g[4] if v is None else g[4] + v)
    return {k: tuple(v) for k, v in groups.items()}


def source_rows(conn: psycopg.Connection) -> list[tuple]:
    return conn.execute(
        'SELECT provider, symbol, "interval", ts, open, high, low, close, volume FROM bars_ohlcv'
    ).fetchall()


def rollup_rows(conn: psycopg.Connection, name: str, lo=None, hi=None) -> dict:
    from psycopg import sql

    rows = conn.execute(
        sql.SQL(
            'SELECT provider, symbol, "interval", bucket, open, high, low, close, volume FROM {} '
            "WHERE (%(lo)s::timestamptz IS NULL OR bucket >= %(lo)s) AND (%(hi)s::timestamptz IS NULL OR bucket < %(hi)s)"
        ).format(sql.Identifier(name)),
        {"lo": lo, "hi": hi},
    ).fetchall()
    return {tuple(r[:4]): tuple(r[4:]) for r in rows}

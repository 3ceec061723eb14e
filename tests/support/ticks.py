"""Tick data helpers shared by the platform-contract tests: the pipeline's statements,
a reference aggregation of tick_data in Python, reading rollups back."""

from __future__ import annotations

from datetime import datetime

import psycopg
from psycopg import sql

from app.timeseries import rollups
from app.timeseries.partitions import align

# The pipeline's tick consumer, verbatim.
TICK_INSERT = (
    "INSERT INTO tick_data (provider, symbol, price, ts, size, bid, ask) "
    "VALUES (%s, UPPER(%s), %s, %s, %s, %s, %s) ON CONFLICT (provider, symbol, ts) DO NOTHING"
)
# Its replayer and exporter (asyncpg: native $n placeholders), verbatim.
TICK_REPLAY = (
    "SELECT provider, symbol, price, ts, size, bid, ask, created_at FROM tick_data "
    "WHERE provider = $1 AND symbol = ANY($2) AND ts >= $3 AND ts < $4 ORDER BY ts"
)
TICK_ROLLUPS = rollups.names_for("tick_data")


def insert_ticks(conn: psycopg.Connection, ticks) -> None:
    """One statement per tick, as the pipeline writes them. ticks: (provider, symbol, price, ts, size, bid, ask)."""
    with conn.cursor() as cur:
        cur.executemany(TICK_INSERT, list(ticks))


def tick_rows(conn: psycopg.Connection) -> list[tuple]:
    return conn.execute("SELECT provider, symbol, price, ts, size, bid, ask FROM tick_data").fetchall()


def rollup(conn: psycopg.Connection, name: str, lo: datetime | None = None, hi: datetime | None = None) -> dict:
    """{(provider, symbol, bucket): (columns...)} of a tick rollup, optionally within [lo, hi)."""
    agg = rollups.aggregate(name)
    t = sql.Identifier(agg.time_column)
    rows = conn.execute(
        sql.SQL(
            "SELECT provider, symbol, {t}, {cols} FROM {name} "
            "WHERE (%(lo)s::timestamptz IS NULL OR {t} >= %(lo)s) AND (%(hi)s::timestamptz IS NULL OR {t} < %(hi)s)"
        ).format(t=t, cols=sql.SQL(", ").join(map(sql.Identifier, agg.columns)), name=sql.Identifier(name)),
        {"lo": lo, "hi": hi},
    ).fetchall()
    return {tuple(r[:3]): tuple(r[3:]) for r in rows}


def _sum(values):
    values = [v for v in values if v is not None]
    return sum(values) if values else None


def _columns(name: str, ticks: list[tuple]) -> tuple | None:
    """One bucket's columns from its ticks (sorted by ts); None when the bucket has no row."""
    prices = [t[2] for t in ticks]
    sized = [(t[2], t[4]) for t in ticks if t[4] is not None]
    volume = _sum(s for _, s in sized)
    vwap = sum(p * s for p, s in sized) / volume if volume else None
    if name in ("tick_agg_1m", "tick_agg_5m", "tick_agg_1h"):
        return (prices[0], max(prices), min(prices), prices[-1], volume, vwap, len(ticks))
    if name == "tick_vwap_daily":
        return (vwap, volume, len(ticks))
    if name == "tick_rate_stats":
        return (len(ticks),)
    if name == "tick_spread_stats":
        quoted = [(t[5], t[6]) for t in ticks if t[5] is not None and t[6] is not None]
        if not quoted:
            return None
        spreads = [a - b for b, a in quoted]
        bps = [(a - b) / ((a + b) / 2) * 10000 for b, a in quoted if (a + b) / 2 != 0]
        return (sum(spreads) / len(spreads), min(spreads), max(spreads), sum(bps) / len(bps) if bps else None)
    raise KeyError(name)


def reference(name: str, ticks, lo: datetime | None = None, hi: datetime | None = None) -> dict:
    """The rollup `name` computed in Python from tick rows (provider, symbol, price, ts, size, bid, ask)."""
    width = rollups.aggregate(name).bucket
    groups: dict[tuple, list] = {}
    for tick in sorted(ticks, key=lambda t: t[3]):
        bucket = align(tick[3], width)
        if (lo is not None and bucket < lo) or (hi is not None and bucket >= hi):
            continue
        groups.setdefault((tick[0], tick[1], bucket), []).append(tick)
    out = {}
    for key, members in groups.items():
        cols = _columns(name, members)
        if cols is not None:
            out[key] = cols
    return out


def close(a, b, rel: float = 1e-9) -> bool:
    if a is None or b is None:
        return a is None and b is None
    return abs(a - b) <= rel * max(1.0, abs(a), abs(b))


def same(got: dict, want: dict) -> bool:
    """Equal keys and values (floats within 1e-9 relative: sums may be added in another order)."""
    if set(got) != set(want):
        return False
    return all(len(got[k]) == len(want[k]) and all(map(close, got[k], want[k])) for k in want)


def diff(got: dict, want: dict) -> str:
    missing = sorted(set(want) - set(got))[:3]
    extra = sorted(set(got) - set(want))[:3]
    wrong = [(k, got[k], want[k]) for k in sorted(set(got) & set(want)) if not same({k: got[k]}, {k: want[k]})][:3]
    return f"missing {missing}, extra {extra}, wrong {wrong}"

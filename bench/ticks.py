"""Bench: refreshing the six tick rollups after one new minute of ticks against a full recompute of a day.

    .venv/bin/python bench/ticks.py [--symbols 500] [--rate 10] [--day-rate 0.05] [--rounds 3]

Builds a throwaway database (TEST_PG_ADMIN_URL, default
postgresql://postgres@127.0.0.1:5432/postgres), migrates it (plain Postgres: rollup
tables, tick_data's statement log), loads one day of ticks for `--symbols` symbols at
`--day-rate` ticks per second each (500 x 0.05/s: 2,160,000 ticks; a day at the live
rate, 432 M, does not fit this machine: a sparser day makes the full recompute cheaper,
so the ratio below is on the safe side) and builds the rollups once. Also creates six
ordinary materialized views with the same columns computed from tick_data directly,
the non-incremental way. Then, `--rounds` times: insert one more minute at `--rate`
ticks per second per symbol (500 x 10/s x 60 s = 300,000 ticks, the day's last
minutes: the hour, the 5-minute bucket and the day are the live ones) and time

- incremental: `rollups.refresh_pending` of the six (the `refresh_aggregate` job's code);
- full: `REFRESH MATERIALIZED VIEW` of the six views (the whole day from tick_data).

Checks that every rollup equals its view after every round (floats within 1e-9
relative) and prints the median seconds of each and the median over the rounds of the
ratio incremental / full, each round against its own full recompute (target: at most 0.1).
The default run takes about five minutes on a busy 2-core machine.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import psycopg  # noqa: E402
from psycopg import sql  # noqa: E402

from app import migrator  # noqa: E402
from app.config import load_settings  # noqa: E402
from app.timeseries import partitions, rollups  # noqa: E402

ADMIN_URL = os.environ.get("TEST_PG_ADMIN_URL", "postgresql://postgres@127.0.0.1:5432/postgres")
DAY = datetime(2024, 1, 1, tzinfo=UTC)
ORIGIN = "timestamptz '1970-01-01 00:00:00+00'"
OHLC = (
    "(array_agg(price ORDER BY ts))[1] AS open, max(price) AS high, min(price) AS low, "
    "(array_agg(price ORDER BY ts DESC))[1] AS close, sum(size) AS volume, "
    "sum(price * size) / nullif(sum(size), 0) AS vwap, count(*) AS tick_count"
)
VIEWS = {  # the six rollups computed from tick_data directly
    "tick_agg_1m": f"date_bin('1 minute', ts, {ORIGIN}) AS bucket, {OHLC}",
    "tick_agg_5m": f"date_bin('5 minutes', ts, {ORIGIN}) AS bucket, {OHLC}",
    "tick_agg_1h": f"date_bin('1 hour', ts, {ORIGIN}) AS bucket, {OHLC}",
    "tick_vwap_daily": f"date_bin('1 day', ts, {ORIGIN}) AS day, sum(price * size) / nullif(sum(size), 0) AS vwap, "
    "sum(size) AS volume, count(*) AS tick_count",
    "tick_spread_stats": f"date_bin('5 minutes', ts, {ORIGIN}) AS bucket, avg(ask - bid) AS avg_spread, "
    "min(ask - bid) AS min_spread, max(ask - bid) AS max_spread, "
    "avg((ask - bid) / nullif((ask + bid) / 2, 0) * 10000) AS avg_spread_bps",
    "tick_rate_stats": f"date_bin('1 minute', ts, {ORIGIN}) AS bucket, count(*) AS ticks_per_minute",
}


def url_for(name: str) -> str:
    return urlunsplit(urlsplit(ADMIN_URL)._replace(path=f"/{name}"))


def load(c: psycopg.Connection, start: datetime, seconds: int, symbols: int, rate: float) -> int:
    """Ticks of `symbols` symbols in [start, start + seconds), `rate` per second each, one statement."""
    step = timedelta(seconds=1 / rate)
    return c.execute(
        """INSERT INTO tick_data (provider, symbol, price, ts, size, bid, ask)
           SELECT 'bench', 'SYM' || lpad(s::text, 4, '0'), 100 + s + (n %% 17) * 0.01, t, (n %% 7)::float8,
                  99.9 + s, 100.1 + s + (n %% 3) * 0.01
           FROM generate_series(1, %s) s,
                generate_series(%s::timestamptz, %s::timestamptz - interval '1 microsecond', %s::interval)
                WITH ORDINALITY AS g(t, n)""",
        (symbols, start, start + timedelta(seconds=seconds), step),
    ).rowcount


def mismatches(c: psycopg.Connection, name: str) -> int:
    """Rows of rollup `name` and view `full_<name>` that differ (keys, or a value beyond 1e-9 relative)."""
    agg = rollups.aggregate(name)
    keys = ["provider", "symbol", agg.time_column]
    differs = sql.SQL(" OR ").join(
        sql.SQL(
            "NOT ((r.{c} IS NULL AND v.{c} IS NULL) OR abs(r.{c} - v.{c}) <= 1e-9 * greatest(1, abs(v.{c})))"
        ).format(c=sql.Identifier(col))
        for col in agg.columns
    )
    q = sql.SQL(
        "SELECT count(*) FROM {r} r FULL JOIN {v} v USING ({keys}) "
        "WHERE r.provider IS NULL OR v.provider IS NULL OR {differs}"
    ).format(
        r=sql.Identifier(name),
        v=sql.Identifier("full_" + name),
        keys=sql.SQL(", ").join(map(sql.Identifier, keys)),
        differs=differs,
    )
    return c.execute(q).fetchone()[0]


def ingest_overhead(c: psycopg.Connection, n: int) -> None:
    """The pipeline's one-tick-per-statement INSERTs, with tick_data's rollup log trigger and without."""
    start = DAY + timedelta(days=1)
    partitions.ensure_range(c, "tick_data", start, start + timedelta(days=1))
    timings = {}
    for label, offset in (("with the rollup log", 0), ("without", 1), ("with the rollup log", 2), ("without", 3)):
        ticks = [
            (
                "ingest",
                f"s{i % 50}",
                100.0 + i % 9,
                start + timedelta(hours=offset, milliseconds=10 * i),
                1.0,
                99.0,
                101.0,
            )
            for i in range(n)
        ]
        if label == "without":
            c.execute("ALTER TABLE tick_data DISABLE TRIGGER tick_data_rollup_ins")
        try:
            t = time.perf_counter()
            with c.cursor() as cur:
                for tick in ticks:  # one statement and one transaction per tick, as the consumer writes
                    cur.execute(
                        "INSERT INTO tick_data (provider, symbol, price, ts, size, bid, ask) "
                        "VALUES (%s, UPPER(%s), %s, %s, %s, %s, %s) ON CONFLICT (provider, symbol, ts) DO NOTHING",
                        tick,
                    )
            timings.setdefault(label, []).append(time.perf_counter() - t)
        finally:
            c.execute("ALTER TABLE tick_data ENABLE TRIGGER tick_data_rollup_ins")
    with_log, without = min(timings["with the rollup log"]), min(timings["without"])
    print(
        f"ingest: {n:,} single-tick INSERTs in {with_log:.2f} s with the rollup log, {without:.2f} s without "
        f"(best of two each): ratio {with_log / without:.2f}x"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--symbols", type=int, default=500)
    parser.add_argument("--rate", type=float, default=10.0, help="ticks per second per symbol in the new minute")
    parser.add_argument("--day-rate", type=float, default=0.05, help="ticks per second per symbol over the day")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument(
        "--statements", type=int, default=5000, help="single-tick INSERTs timed with and without the rollup log"
    )
    args = parser.parse_args()
    name = f"bench_ticks_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(ADMIN_URL, autocommit=True) as admin:
        admin.execute(f'CREATE DATABASE "{name}"')
    url = url_for(name)
    try:
        migrator.apply(load_settings({"DATABASE_URL": url, "REDIS_URL": "redis://127.0.0.1:1/0"}, dotenv=False))
        with psycopg.connect(url, autocommit=True) as c:
            partitions.ensure_range(c, "tick_data", DAY, DAY + timedelta(days=1))
            history = 86400 - 60 * args.rounds  # the day but its last minutes, which arrive live below
            rows = sum(
                load(c, DAY + timedelta(hours=h), min(3600, history - 3600 * h), args.symbols, args.day_rate)
                for h in range(24)
                if history - 3600 * h > 0
            )
            print(f"day: {rows:,} ticks ({args.symbols} symbols at {args.day_rate:g}/s); building the rollups once")
            for agg in rollups.names_for("tick_data"):
                rollups.refresh_pending(c, agg)
            for view, body in VIEWS.items():
                keys = "provider, symbol"
                c.execute(
                    f"CREATE MATERIALIZED VIEW full_{view} AS SELECT {keys}, {body} FROM tick_data "
                    + ("WHERE bid IS NOT NULL AND ask IS NOT NULL " if view == "tick_spread_stats" else "")
                    + "GROUP BY 1, 2, 3 WITH NO DATA"
                )
            c.execute("ANALYZE")
            incremental, full = [], []
            for r in range(args.rounds):
                minute = DAY + timedelta(seconds=history + 60 * r)
                n = load(c, minute, 60, args.symbols, args.rate)
                t = time.perf_counter()
                outs = [rollups.refresh_pending(c, agg) for agg in rollups.names_for("tick_data")]
                incremental.append(time.perf_counter() - t)
                t = time.perf_counter()
                for view in VIEWS:
                    c.execute(f"REFRESH MATERIALIZED VIEW full_{view}")
                full.append(time.perf_counter() - t)
                bad = {agg: mismatches(c, agg) for agg in VIEWS}
                assert not any(bad.values()), f"rollups differ from the views: {bad}"
                buckets = {o["aggregate"]: o["buckets"] for o in outs}
                print(
                    f"round {r + 1}: +{n:,} ticks at {minute:%H:%M}; incremental {incremental[-1]:.3f} s "
                    f"(buckets {buckets}), full {full[-1]:.3f} s"
                )
            if args.statements:
                ingest_overhead(c, args.statements)
        inc, ful = statistics.median(incremental), statistics.median(full)
        ratio = statistics.median(i / f for i, f in zip(incremental, full, strict=True))
        print(f"median incremental refresh: {inc:.3f} s; median full recompute of the day: {ful:.3f} s")
        print(f"ratio incremental / full (median over the rounds, each against its own round): {ratio:.3f}x")
        print("target: at most 0.1x")
    finally:
        with psycopg.connect(ADMIN_URL, autocommit=True) as admin:
            admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


if __name__ == "__main__":
    main()

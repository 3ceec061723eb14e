"""Bench: refreshing the rollups after one day of new data against a full recompute.

    .venv/bin/python bench/refresh.py [--symbols 24] [--rounds 3]

Builds a throwaway database (TEST_PG_ADMIN_URL, default
postgresql://postgres@127.0.0.1:5432/postgres), migrates it (plain Postgres: rollup
tables + invalidation triggers), loads 60 days of one-minute bars for `--symbols`
series (24: 2,073,600 rows) and builds bars_ohlcv_1h / bars_ohlcv_1d once. Also creates
two ordinary materialized views with the same GROUP BY, the non-incremental way.
Then, `--rounds` times: insert one more day of bars (24 x 1440 rows) and time

- incremental: `rollups.refresh_pending` of both aggregates (the `refresh_aggregate`
  job's code: only the invalidated buckets);
- full: `REFRESH MATERIALIZED VIEW` of both views (the whole history);
- whole-history window: `rollups.refresh` over all the data (our code, not incremental).

Checks that the rollups equal the views after every round, and prints the seconds of
each (median over the rounds) and the ratio full / incremental.
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

from app import migrator  # noqa: E402
from app.config import load_settings  # noqa: E402
from app.timeseries import partitions, rollups  # noqa: E402

ADMIN_URL = os.environ.get("TEST_PG_ADMIN_URL", "postgresql://postgres@127.0.0.1:5432/postgres")
START = datetime(2024, 1, 1, tzinfo=UTC)
DAYS = 60
VIEW = """
CREATE MATERIALIZED VIEW {name} AS
SELECT provider, symbol, "interval", date_bin('{width}', ts, timestamptz '1970-01-01 00:00:00+00') AS bucket,
       (array_agg(open ORDER BY ts))[1] AS open, max(high) AS high, min(low) AS low,
       (array_agg(close ORDER BY ts DESC))[1] AS close, sum(volume) AS volume
FROM bars_ohlcv GROUP BY 1, 2, 3, 4 WITH NO DATA
"""


def url_for(name: str) -> str:
    return urlunsplit(urlsplit(ADMIN_URL)._replace(path=f"/{name}"))


def load_day(c: psycopg.Connection, day: datetime, symbols: int) -> None:
    c.execute(
        """INSERT INTO bars_ohlcv (provider, symbol, "interval", ts, open, high, low, close, volume)
           SELECT 'bench', 'SYM' || lpad(s::text, 4, '0'), '1m', t,
                  100 + s + extract(minute FROM t), 101 + s, 99 + s, 100.5 + s - extract(hour FROM t), 1000 + s
           FROM generate_series(1, %s) s, generate_series(%s::timestamptz, %s::timestamptz, '1 minute') t""",
        (symbols, day, day + timedelta(days=1) - timedelta(minutes=1)),
    )


def same(c: psycopg.Connection, rollup: str, view: str) -> bool:
    q = f"""SELECT count(*) FROM ((SELECT * FROM {rollup} EXCEPT SELECT * FROM {view})
                                  UNION ALL (SELECT * FROM {view} EXCEPT SELECT * FROM {rollup})) d"""
    return c.execute(q).fetchone()[0] == 0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--symbols", type=int, default=24)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    name = f"bench_refresh_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(ADMIN_URL, autocommit=True) as admin:
        admin.execute(f'CREATE DATABASE "{name}"')
    try:
        url = url_for(name)
        migrator.apply(load_settings({"DATABASE_URL": url}, dotenv=False))
        with psycopg.connect(url, autocommit=True) as c:
            partitions.ensure_range(c, "bars_ohlcv", START, START + timedelta(days=DAYS + args.rounds))
            t0 = time.perf_counter()
            for day in range(DAYS):
                load_day(c, START + timedelta(days=day), args.symbols)
            rows = c.execute("SELECT count(*) FROM bars_ohlcv").fetchone()[0]
            print(f"loaded {rows:,} rows over {DAYS} days in {time.perf_counter() - t0:.1f} s")
            t0 = time.perf_counter()
            for agg in rollups.names_for("bars_ohlcv"):
                rollups.refresh_pending(c, agg)
            print(f"first build of both rollups (all {DAYS} days invalidated): {time.perf_counter() - t0:.1f} s")
            for agg in rollups.names_for("bars_ohlcv"):
                width = "1 hour" if agg.endswith("1h") else "1 day"
                c.execute(VIEW.format(name=f"full_{agg}", width=width))
                c.execute(f"REFRESH MATERIALIZED VIEW full_{agg}")
            c.execute("VACUUM ANALYZE")
            incremental, full, window = [], [], []
            for r in range(args.rounds):
                load_day(c, START + timedelta(days=DAYS + r), args.symbols)
                c.execute("CHECKPOINT")
                t0 = time.perf_counter()
                outs = [rollups.refresh_pending(c, agg) for agg in rollups.names_for("bars_ohlcv")]
                incremental.append(time.perf_counter() - t0)
                c.execute("CHECKPOINT")
                t0 = time.perf_counter()
                for agg in rollups.names_for("bars_ohlcv"):
                    c.execute(f"REFRESH MATERIALIZED VIEW full_{agg}")
                full.append(time.perf_counter() - t0)
                t0 = time.perf_counter()
                for agg in rollups.names_for("bars_ohlcv"):  # the same code, told to recompute the whole history
                    rollups.refresh(c, agg, START, START + timedelta(days=DAYS + r + 1))
                window.append(time.perf_counter() - t0)
                assert all(same(c, agg, f"full_{agg}") for agg in rollups.names_for("bars_ohlcv")), (
                    "rollup differs from the view"
                )
                buckets = ", ".join(f"{o['aggregate']}: {o['buckets']} buckets" for o in outs)
                print(
                    f"round {r + 1}: +{args.symbols * 1440:,} rows; incremental {incremental[-1]:.2f} s "
                    f"({buckets}); full recompute {full[-1]:.2f} s; whole-history window {window[-1]:.2f} s"
                )
        inc, ful, win = statistics.median(incremental), statistics.median(full), statistics.median(window)
        print(
            f"median incremental refresh: {inc:.3f} s; median full recompute (REFRESH MATERIALIZED VIEW): "
            f"{ful:.3f} s; median whole-history window refresh: {win:.3f} s"
        )
        print(f"ratio full / incremental: {ful / inc:.1f}x")
        print(f"ratio whole-history window / incremental: {win / inc:.1f}x")
    finally:
        with psycopg.connect(ADMIN_URL, autocommit=True) as admin:
            admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


if __name__ == "__main__":
    main()

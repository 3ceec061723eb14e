"""Bench: the retention job against a plain DELETE, on >= 2 million rows over 60 days keeping 30.

    .venv/bin/python bench/retention.py [--symbols 24]

Builds one throwaway database (TEST_PG_ADMIN_URL, default
postgresql://postgres@127.0.0.1:5432/postgres), migrates it, makes the partitions and
loads `--symbols` one-minute series over the last 60 days into bars_ohlcv
(24 symbols: 2,073,600 rows), VACUUM ANALYZE, then clones it twice (CREATE DATABASE
... TEMPLATE) so every contender starts from the same bytes:

- job: `retention.apply_table` (the code of the `retention` job) with a 30-day policy;
- DELETE: `DELETE FROM bars_ohlcv WHERE ts < now() - interval '30 days'`, one statement,
  as an operator would (it also fires the rollup invalidation trigger);
- DELETE, triggers off: the same with session_replication_role = replica.

A CHECKPOINT precedes each timed run. Prints rows removed and seconds of each and the
ratios DELETE/job, and the disk space bars_ohlcv takes afterwards (a DELETE
leaves dead rows behind until VACUUM; dropped partitions give the space back). Nothing is asserted beyond "no row older than the cutoff is left".
"""

from __future__ import annotations

import argparse
import os
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
from app.timeseries import partitions, retention  # noqa: E402

ADMIN_URL = os.environ.get("TEST_PG_ADMIN_URL", "postgresql://postgres@127.0.0.1:5432/postgres")
DAYS, KEEP = 60, 30


def url_for(name: str) -> str:
    return urlunsplit(urlsplit(ADMIN_URL)._replace(path=f"/{name}"))


def load(url: str, symbols: int) -> int:
    now = datetime.now(UTC).replace(second=0, microsecond=0)
    start = now - timedelta(days=DAYS)
    with psycopg.connect(url, autocommit=True) as c:
        partitions.ensure_range(c, "bars_ohlcv", start - timedelta(days=1), now)
        for day in range(DAYS):
            lo = start + timedelta(days=day)
            c.execute(
                """INSERT INTO bars_ohlcv (provider, symbol, "interval", ts, open, high, low, close, volume)
                   SELECT 'bench', 'SYM' || lpad(s::text, 4, '0'), '1m', t, 100 + s, 101 + s, 99 + s, 100.5 + s, 1000
                   FROM generate_series(1, %s) s, generate_series(%s::timestamptz, %s::timestamptz, '1 minute') t""",
                (symbols, lo, lo + timedelta(days=1) - timedelta(minutes=1)),
            )
        c.execute("TRUNCATE store_rollup_invalidations")  # not what this bench measures
        c.execute("VACUUM ANALYZE")
        return c.execute("SELECT count(*) FROM bars_ohlcv").fetchone()[0]


def timed(url: str, fn) -> tuple[float, int]:
    with psycopg.connect(url, autocommit=True) as c:
        c.execute("CHECKPOINT")
        floor = c.execute("SELECT now() - %s::interval", (timedelta(days=KEEP),)).fetchone()[0]
        t0 = time.perf_counter()
        removed = fn(c)
        elapsed = time.perf_counter() - t0
        left = c.execute("SELECT count(*) FROM bars_ohlcv WHERE ts < %s", (floor,)).fetchone()[0]
        assert left == 0, f"{left} rows older than the cutoff are left"
        size = c.execute("SELECT sum(pg_total_relation_size(relid)) FROM pg_partition_tree('bars_ohlcv')").fetchone()[0]
    return elapsed, removed, size


def run_job(c: psycopg.Connection) -> int:
    retention.set_policy(c, "bars_ohlcv", timedelta(days=KEEP), True)
    return retention.apply_table(c, "bars_ohlcv")["rows_removed"]


def plain_delete(c: psycopg.Connection) -> int:
    return c.execute("DELETE FROM bars_ohlcv WHERE ts < now() - interval '30 days'").rowcount


def delete_without_triggers(c: psycopg.Connection) -> int:
    c.execute("SET session_replication_role = replica")
    return plain_delete(c)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--symbols", type=int, default=24)
    args = parser.parse_args()
    tag = uuid.uuid4().hex[:8]
    names = {k: f"bench_retention_{tag}_{k}" for k in ("job", "delete", "delete_notrig")}
    with psycopg.connect(ADMIN_URL, autocommit=True) as admin:
        admin.execute(f'CREATE DATABASE "{names["job"]}"')
    try:
        t0 = time.perf_counter()
        migrator.apply(load_settings({"DATABASE_URL": url_for(names["job"])}, dotenv=False))
        rows = load(url_for(names["job"]), args.symbols)
        print(f"loaded {rows:,} rows over {DAYS} days into bars_ohlcv in {time.perf_counter() - t0:.1f} s")
        with psycopg.connect(ADMIN_URL, autocommit=True) as admin:
            for key in ("delete", "delete_notrig"):
                admin.execute(f'CREATE DATABASE "{names[key]}" TEMPLATE "{names["job"]}" STRATEGY FILE_COPY')
        results = {
            "DELETE": timed(url_for(names["delete"]), plain_delete),
            "job": timed(url_for(names["job"]), run_job),
            "DELETE, triggers off": timed(url_for(names["delete_notrig"]), delete_without_triggers),
        }
        for label, (seconds, removed, size) in results.items():
            print(
                f"{label:22s} removed {removed:>10,} rows in {seconds:7.2f} s; "
                f"bars_ohlcv then takes {size / 2**20:7.1f} MiB on disk"
            )
        job = results["job"][0]
        print(f"ratio DELETE / job:               {results['DELETE'][0] / job:6.1f}x")
        print(f"ratio DELETE (triggers off) / job: {results['DELETE, triggers off'][0] / job:6.1f}x")
    finally:
        with psycopg.connect(ADMIN_URL, autocommit=True) as admin:
            for name in names.values():
                admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


if __name__ == "__main__":
    main()

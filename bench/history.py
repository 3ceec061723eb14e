"""Bench: decades of daily bars next to weeks of minute bars (issue "decades of history").

    .venv/bin/python bench/history.py [--symbols 500] [--years 25] [--minute-symbols 20] [--minute-days 30]
                                      [--backend postgres|timescaledb|both] [--partman-weeks 1166]

Generates `--years` of weekday daily bars for `--symbols` symbols (25 x 500: about 3.1 M
rows) ending yesterday, and `--minute-days` of one-minute bars for `--minute-symbols`
symbols (30 x 20: 864,000 rows) ending now, each as a gzip NDJSON file (symbol after
symbol, as vendors ship per-symbol history) and as CSV. Then, per backend (plain Postgres
on TEST_PG_ADMIN_URL; TimescaleDB in a throwaway cluster when timescaledb.so is
installed), in a fresh migrated database, prints:

1. load: rows/s of a raw `COPY` of the CSVs into an unpartitioned table with the same
   primary key (`CREATE TABLE bench_copy (LIKE bars_ohlcv INCLUDING ALL)`) against rows/s of
   the real `backfill.bars_ohlcv` job loading both files (partition creation included),
   and their ratio (target >= 0.5); the partitions (chunks) `bars_ohlcv` then has (<= 300);
   then both tables are vacuumed and analysed (history at rest, as autovacuum leaves it;
   `--no-vacuum` skips that, to measure right after the load);
2. queries: `EXPLAIN (ANALYZE, SUMMARY)` planning + execution time, second run in a
   session, of "the latest bar of one symbol and interval" and "one symbol, one year of
   daily bars" (target <= 20 ms each);
3. retention of the oldest 20 of the 25 years (the default 5-year policy, run by the
   retention job code) against a plain `DELETE` of the same rows from `bench_copy`, the
   ratio (target <= 0.3), and that it is exact (every row older than the cutoff gone,
   every newer row kept);
4. partition creation (plain Postgres): ms per partition of `--partman-weeks` weekly
   partitions made by `app.timeseries.partitions.create` beside pg_partman's
   `create_parent` making as many on a table of the same shape, when the extension is
   installed (Debian: postgresql-15-partman).

Nothing is asserted: it is a measurement.
"""

from __future__ import annotations

import argparse
import gzip
import itertools
import json
import os
import re
import subprocess
import sys
import tempfile
import time
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import orjson  # noqa: E402
import psycopg  # noqa: E402

sys.path.insert(0, str(ROOT / "bench"))
from backfill import settings_env as env_for  # noqa: E402  (the job's settings, as bench/backfill.py runs it)

ADMIN_URL = os.environ.get("TEST_PG_ADMIN_URL", "postgresql://postgres@127.0.0.1:5432/postgres")
COLUMNS = "provider, symbol, interval, ts, open, high, low, close, volume"
PROVIDER = "bench"


def generate(work: Path, args: argparse.Namespace, now: datetime) -> tuple[list[Path], list[Path], int, int]:
    """(NDJSON files, CSV files, daily rows, minute rows)."""
    today = now.replace(hour=0, minute=0, second=0, microsecond=0)
    first_day = today.replace(year=today.year - args.years)
    days = [first_day + timedelta(days=i) for i in range((today - first_day).days)]
    days = [d for d in days if d.weekday() < 5]
    minute_start = now.replace(second=0, microsecond=0) - timedelta(days=args.minute_days)
    minutes = [minute_start + timedelta(minutes=i) for i in range(args.minute_days * 1440)]
    out_nd, out_csv = [], []
    counts = []
    for tag, times, symbols, interval in (
        ("daily", days, args.symbols, "1d"),
        ("minute", minutes, args.minute_symbols, "1m"),
    ):
        nd, csv = work / f"{tag}.ndjson.gz", work / f"{tag}.csv"
        stamps = [t.strftime("%Y-%m-%dT%H:%M:%SZ") for t in times]
        with gzip.open(nd, "wb", compresslevel=1) as f_nd, open(csv, "wb") as f_csv:
            for s in range(symbols):
                symbol = f"S{s:04d}"
                lines, csv_lines = [], []
                for k, ts in enumerate(stamps):
                    o = 50.0 + (k % 997) * 0.01 + s * 0.25
                    h, lo, c, v = o + 0.5, o - 0.5, o + 0.125, float(1000 + k % 7919)
                    lines.append(
                        orjson.dumps(
                            {
                                "provider": PROVIDER,
                                "symbol": symbol,
                                "interval": interval,
                                "ts": ts,
                                "open": o,
                                "high": h,
                                "low": lo,
                                "close": c,
                                "volume": v,
                            }
                        )
                    )
                    csv_lines.append(f"{PROVIDER},{symbol},{interval},{ts},{o!r},{h!r},{lo!r},{c!r},{v!r}".encode())
                f_nd.write(b"\n".join(lines) + b"\n")
                f_csv.write(b"\n".join(csv_lines) + b"\n")
        out_nd.append(nd)
        out_csv.append(csv)
        counts.append(len(times) * symbols)
    return out_nd, out_csv, counts[0], counts[1]


def with_db(admin_url: str, name: str) -> str:
    return urlunsplit(urlsplit(admin_url)._replace(path=f"/{name}"))


def copy_baseline(url: str, csvs: list[Path]) -> float:
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("CREATE TABLE bench_copy (LIKE bars_ohlcv INCLUDING ALL)")
        conn.execute("CHECKPOINT")
        started = time.perf_counter()
        for path in csvs:
            with (
                conn.cursor() as cur,
                cur.copy(f"COPY bench_copy ({COLUMNS}) FROM STDIN (FORMAT csv)") as copy,
                open(path, "rb") as f,
            ):
                while chunk := f.read(1 << 20):
                    copy.write(chunk)
        return time.perf_counter() - started


def job_load(url: str, work: Path, files: list[Path]) -> tuple[float, int]:
    """The real backfill job, in a child process (bench/backfill.py --child), file after file."""
    seconds = rows = 0
    for path in files:
        proc = subprocess.run(
            [sys.executable, str(ROOT / "bench" / "backfill.py"), "--child", url, str(work), path.name, "{}"],
            capture_output=True,
            text=True,
            env={**os.environ, **env_for(url, work)},
            timeout=3600,
        )
        if proc.returncode != 0:
            raise SystemExit(f"job failed:\n{proc.stdout}\n{proc.stderr}")
        doc = json.loads(proc.stdout.strip().splitlines()[-1])
        print(f"  {path.name}: {doc['rows']:,} rows in {doc['seconds']:.1f} s; vacuumed: {doc.get('vacuumed')}")
        seconds += doc["seconds"]
        rows += doc["rows"]
    return seconds, rows


def partition_count(conn: psycopg.Connection, timescale: bool) -> int:
    if timescale:
        return conn.execute("SELECT count(*) FROM show_chunks('bars_ohlcv')").fetchone()[0]
    return conn.execute(
        """SELECT count(*) FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid
           WHERE i.inhparent = 'bars_ohlcv'::regclass"""
    ).fetchone()[0]


def explain(conn: psycopg.Connection, query: str) -> tuple[float, float]:
    """(planning ms, execution ms) of the second EXPLAIN (ANALYZE, SUMMARY) in this session."""
    for _ in range(2):
        text = "\n".join(r[0] for r in conn.execute(f"EXPLAIN (ANALYZE, SUMMARY) {query}").fetchall())
    planning = float(re.search(r"Planning Time: ([\d.]+) ms", text).group(1))  # type: ignore[union-attr]
    execution = float(re.search(r"Execution Time: ([\d.]+) ms", text).group(1))  # type: ignore[union-attr]
    return planning, execution


def queries(url: str, now: datetime, symbols: int) -> None:
    symbol = f"S{symbols // 2:04d}"
    year = now.year - 10
    latest = (
        f"SELECT * FROM bars_ohlcv WHERE provider = '{PROVIDER}' AND symbol = '{symbol}' AND interval = '1d' "
        "ORDER BY ts DESC LIMIT 1"
    )
    one_year = (
        f"SELECT * FROM bars_ohlcv WHERE provider = '{PROVIDER}' AND symbol = '{symbol}' AND interval = '1d' "
        f"AND ts >= '{year}-01-01' AND ts < '{year + 1}-01-01' ORDER BY ts"
    )
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("ANALYZE bars_ohlcv")
    with psycopg.connect(url, autocommit=True) as conn:  # a new session, as a client would have
        for label, query in (
            ("latest bar of one symbol and interval", latest),
            (f"one symbol, {year} daily", one_year),
        ):
            planning, execution = explain(conn, query)
            print(
                f"  query {label}: planning {planning:.2f} ms + execution {execution:.2f} ms = "
                f"{planning + execution:.2f} ms (target <= 20)"
            )


def partition_creation(url: str, weeks: int) -> None:
    """Ours against pg_partman's create_parent, `weeks` weekly partitions each."""
    from app.timeseries import partitions

    start = datetime(1901, 1, 3, tzinfo=UTC)  # a region without partitions (epoch-aligned Thursday)
    pieces = [(start + i * timedelta(days=7), start + (i + 1) * timedelta(days=7)) for i in range(weeks)]
    with psycopg.connect(url, autocommit=True) as conn:
        t0 = time.perf_counter()
        made = partitions.create(conn, "bars_ohlcv", pieces)
        ours = (time.perf_counter() - t0) * 1000 / max(made, 1)
        print(f"  partition creation, ours: {made} weekly partitions, {ours:.2f} ms each")
        have = conn.execute("SELECT 1 FROM pg_available_extensions WHERE name = 'pg_partman'").fetchone()
        if not have:
            print("  pg_partman not installed (Debian: postgresql-15-partman): no comparison")
            return
        conn.execute("CREATE SCHEMA partman")
        conn.execute("CREATE EXTENSION pg_partman SCHEMA partman")
        version = conn.execute("SELECT extversion FROM pg_extension WHERE extname = 'pg_partman'").fetchone()[0]
        conn.execute(
            """CREATE TABLE partman_bars (
                 provider text NOT NULL, symbol text NOT NULL, "interval" text NOT NULL, ts timestamptz NOT NULL,
                 open double precision, high double precision, low double precision, close double precision,
                 volume double precision, created_at timestamptz NOT NULL DEFAULT now(),
                 updated_at timestamptz NOT NULL DEFAULT now(),
                 PRIMARY KEY (provider, symbol, "interval", ts)) PARTITION BY RANGE (ts)"""
        )
        conn.execute("CREATE INDEX ON partman_bars (ts DESC)")
        # bars_ohlcv's row trigger, which every new partition gets a clone of (the same shape)
        conn.execute(
            "CREATE TRIGGER partman_bars_updated_at BEFORE UPDATE ON partman_bars "
            "FOR EACH ROW EXECUTE FUNCTION store_touch_updated_at()"
        )
        now = datetime.now(UTC)
        begin = now - timedelta(weeks=weeks - 5)
        t0 = time.perf_counter()
        conn.execute(
            "SELECT partman.create_parent(p_parent_table => 'public.partman_bars', p_control => 'ts', "
            "p_type => 'native', p_interval => 'weekly', p_premake => 4, p_start_partition => %s)",
            (begin.strftime("%Y-%m-%d"),),
        )
        seconds = time.perf_counter() - t0
        n = conn.execute(
            """SELECT count(*) FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid
               WHERE i.inhparent = 'partman_bars'::regclass AND NOT c.relname LIKE '%%default'"""
        ).fetchone()[0]
        print(
            f"  partition creation, pg_partman {version} create_parent weekly: {n} partitions, "
            f"{seconds * 1000 / max(n, 1):.2f} ms each; ours / pg_partman: {ours / (seconds * 1000 / max(n, 1)):.2f}"
        )


def retention(url: str, now: datetime, timescale: bool) -> None:
    """The retention job code with the default 5-year policy against a plain DELETE."""
    from app.timeseries import retention as retention_mod

    with psycopg.connect(url, autocommit=True) as conn:
        policy = conn.execute("SELECT retain FROM store_retention_policies WHERE table_name = 'bars_ohlcv'").fetchone()[
            0
        ]
        cutoff = now - policy
        total = conn.execute("SELECT count(*) FROM bars_ohlcv").fetchone()[0]
        keep = conn.execute("SELECT count(*) FROM bars_ohlcv WHERE ts >= %s", (cutoff,)).fetchone()[0]
        conn.execute("CHECKPOINT")
        phases: list[tuple[float, str]] = []

        def progress(**kw: object) -> None:
            if not phases or phases[-1][1] != kw["phase"]:
                phases.append((time.perf_counter(), str(kw["phase"])))

        t0 = time.perf_counter()
        result = retention_mod.apply_table(conn, "bars_ohlcv", now=now, progress=progress)
        ours = time.perf_counter() - t0
        marks = [(t0, "before the first phase"), *phases, (t0 + ours, "end")]
        spent = ", ".join(f"{name} {b - a:.2f} s" for (a, name), (b, _n) in itertools.pairwise(marks))
        left = conn.execute("SELECT count(*), min(ts) FROM bars_ohlcv").fetchone()
        conn.execute("CHECKPOINT")
        t0 = time.perf_counter()
        deleted = conn.execute("DELETE FROM bench_copy WHERE ts < %s", (cutoff,)).rowcount
        plain = time.perf_counter() - t0
    exact = left[0] == keep and (left[1] is None or left[1] >= cutoff) and result.get("rows_removed") == total - keep
    print(
        f"  retention of rows before {cutoff:%Y-%m-%d} ({total - keep:,} of {total:,} rows): ours {ours:.2f} s "
        f"(dropped {result.get('dropped')} {'chunks' if timescale else 'partitions'}), "
        f"plain DELETE of {deleted:,} rows {plain:.2f} s; ratio {ours / plain:.3f} (target <= 0.3); "
        f"exact: {'yes' if exact else 'NO'} ({left[0]:,} rows kept, {keep:,} expected)"
    )
    print(f"  retention time by phase: {spent}")


def run_backend(label: str, admin_url: str, work: Path, files, csvs, rows: int, args, now: datetime) -> None:
    from app import config, migrator

    timescale = label == "timescaledb"
    name = f"mds_bench_history_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(admin_url, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    url = with_db(admin_url, name)
    try:
        migrator.apply(config.load_settings(env_for(url, work), dotenv=False))
        print(f"{label}:")
        copy_s = copy_baseline(url, csvs)
        with psycopg.connect(url, autocommit=True) as conn:
            before = partition_count(conn, timescale)
            conn.execute("CHECKPOINT")
        job_s, loaded = job_load(url, work, files)
        with psycopg.connect(url, autocommit=True) as conn:
            after = partition_count(conn, timescale)
        print(
            f"  load {rows:,} rows: raw COPY {rows / copy_s:,.0f} rows/s ({copy_s:.1f} s); backfill job "
            f"{loaded / job_s:,.0f} rows/s ({job_s:.1f} s); ratio {copy_s / job_s:.2f} (target >= 0.5)"
        )
        print(
            f"  {'chunks' if timescale else 'partitions'} of bars_ohlcv: {after} ({before} before the load; "
            f"target <= 300)"
        )
        if not args.no_vacuum:
            with psycopg.connect(url, autocommit=True) as conn:
                # History at rest, as autovacuum leaves years-old rows: both tables vacuumed and
                # analysed before the queries, and before retention and the DELETE it is compared with.
                conn.execute("VACUUM (ANALYZE) bars_ohlcv")
                conn.execute("VACUUM (ANALYZE) bench_copy")
        queries(url, now, args.symbols)
        retention(url, now, timescale)
        if not timescale and args.partman_weeks:
            partition_creation(url, args.partman_weeks)
    finally:
        with psycopg.connect(admin_url, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def main() -> None:
    ap = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    ap.add_argument("--symbols", type=int, default=500)
    ap.add_argument("--years", type=int, default=25)
    ap.add_argument("--minute-symbols", type=int, default=20)
    ap.add_argument("--minute-days", type=int, default=30)
    ap.add_argument("--backend", choices=("postgres", "timescaledb", "both"), default="both")
    ap.add_argument("--partman-weeks", type=int, default=1166, help="partitions of the creation comparison (0: skip)")
    ap.add_argument(
        "--no-vacuum",
        action="store_true",
        help="query and apply retention right after the load, before any VACUUM (rows not yet at rest)",
    )
    args = ap.parse_args()

    now = datetime.now(UTC)
    work = Path(tempfile.mkdtemp(prefix="mds-bench-history-"))
    t0 = time.perf_counter()
    files, csvs, daily, minute = generate(work, args, now)
    rows = daily + minute
    print(
        f"generated {daily:,} daily bars ({args.years} years x {args.symbols} symbols) and {minute:,} minute bars "
        f"({args.minute_days} days x {args.minute_symbols} symbols) in {time.perf_counter() - t0:.0f} s"
    )
    try:
        if args.backend in ("postgres", "both"):
            run_backend("postgres", ADMIN_URL, work, files, csvs, rows, args, now)
        if args.backend in ("timescaledb", "both"):
            from tests.support.timescale import HAVE_TIMESCALEDB, TimescaleCluster

            if not HAVE_TIMESCALEDB:
                print("timescaledb: not installed here, skipped")
            else:
                cluster = TimescaleCluster().start()
                try:
                    run_backend("timescaledb", cluster.admin_url, work, files, csvs, rows, args, now)
                finally:
                    cluster.stop()
    finally:
        for path in work.iterdir():
            path.unlink()
        work.rmdir()


if __name__ == "__main__":
    main()

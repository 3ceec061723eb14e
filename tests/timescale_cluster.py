"""A throwaway Postgres 15 cluster with TimescaleDB preloaded, for tests marked `timescaledb`.

Import the fixtures into a test module (`from timescale_cluster import ...`). Tests
skip cleanly when the extension's library is not installed. The cluster (initdb in a
temporary directory owned by postgres, random port, unix socket in /tmp) is started
once per test session and stopped and deleted at the end; every test gets a fresh
database in it.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
import uuid
from pathlib import Path

import psycopg
import pytest
from conftest import free_port, make_settings, wait_for

PG_BIN = Path(os.environ.get("TEST_PG_BIN", "/usr/lib/postgresql/15/bin"))
PG_LIB = Path(os.environ.get("TEST_PG_LIB", "/usr/lib/postgresql/15/lib"))
HAVE_TIMESCALEDB = (PG_LIB / "timescaledb.so").exists() and (PG_BIN / "pg_ctl").exists()

requires_timescaledb = pytest.mark.skipif(not HAVE_TIMESCALEDB, reason=f"timescaledb.so not found in {PG_LIB}")


def _as_postgres(args: list[str]) -> list[str]:
    return ["runuser", "-u", "postgres", "--", *args] if os.geteuid() == 0 else args


class TimescaleCluster:
    def __init__(self):
        self.dir = Path(tempfile.mkdtemp(prefix="mds-tsdb-"))
        self.data = self.dir / "data"
        self.log = self.dir / "server.log"
        self.port = free_port()
        self.admin_url = f"postgresql://postgres@127.0.0.1:{self.port}/postgres"

    def start(self) -> TimescaleCluster:
        if os.geteuid() == 0:
            shutil.chown(self.dir, "postgres", "postgres")
        subprocess.run(
            _as_postgres(
                [str(PG_BIN / "initdb"), "-D", str(self.data), "-U", "postgres", "--auth=trust", "-E", "UTF8"]
            ),
            check=True,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        options = (
            f"-c shared_preload_libraries=timescaledb -c port={self.port} -c listen_addresses=127.0.0.1 "
            "-c unix_socket_directories=/tmp -c timescaledb.telemetry_level=off -c max_connections=60 "
            "-c fsync=off -c synchronous_commit=off"
        )
        subprocess.run(
            _as_postgres(
                [str(PG_BIN / "pg_ctl"), "-D", str(self.data), "-l", str(self.log), "-w", "-o", options, "start"]
            ),
            check=True,
            stdout=subprocess.DEVNULL,
        )
        wait_for(
            lambda: psycopg.connect(self.admin_url, connect_timeout=2).close() is None,
            20,
            message="the TimescaleDB cluster to accept connections",
        )
        return self

    def stop(self) -> None:
        subprocess.run(
            _as_postgres([str(PG_BIN / "pg_ctl"), "-D", str(self.data), "-m", "fast", "stop"]),
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        shutil.rmtree(self.dir, ignore_errors=True)

    def create_database(self) -> tuple[str, str]:
        name = f"mds_ts_{uuid.uuid4().hex[:12]}"
        with psycopg.connect(self.admin_url, autocommit=True) as conn:
            conn.execute(f'CREATE DATABASE "{name}"')
        return name, self.admin_url.rsplit("/", 1)[0] + f"/{name}"

    def drop_database(self, name: str) -> None:
        with psycopg.connect(self.admin_url, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture(scope="session")
def timescale_cluster():
    if not HAVE_TIMESCALEDB:
        pytest.skip(f"timescaledb.so not found in {PG_LIB}")
    cluster = TimescaleCluster()
    try:
        cluster.start()
    except Exception:
        cluster.stop()
        raise
    yield cluster
    cluster.stop()


@pytest.fixture
def timescale_database_url(timescale_cluster):
    name, url = timescale_cluster.create_database()
    yield url
    timescale_cluster.drop_database(name)


@pytest.fixture
def timescale_migrated_url(timescale_database_url, redis_url):
    """A fresh database on the TimescaleDB cluster with every migration applied."""
    from app import migrator

    migrator.apply(make_settings(timescale_database_url, redis_url))
    return timescale_database_url


# -- data helpers shared by the time-series tests -------------------------------------------
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
    """GROUP BY in Python over source rows: first open, max high, min low, last close, sum volume."""
    from app.timeseries.partitions import align

    groups: dict = {}
    for provider, symbol, interval, ts, o, h, l, c, v in sorted(rows, key=lambda r: r[3]):
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

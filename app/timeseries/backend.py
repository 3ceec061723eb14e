"""Which time-series backend a database (and a table) uses: TimescaleDB or plain Postgres.

The choice is made once, by the migrations that create the time-series tables
(`migrations/0003_bars_ohlcv.sql`, `0006_market_data_tables.sql`): if the `timescaledb`
extension is installed, or available and preloaded (`shared_preload_libraries`),
tables become hypertables; otherwise they become natively range-partitioned tables
managed by `app.timeseries.partitions`. Afterwards each table's own kind is the truth
(`table_backend`).
"""

from __future__ import annotations

import psycopg

from app.db import scalar

TIMESCALEDB = "timescaledb"
POSTGRES = "postgres"


def timescaledb_version(conn: psycopg.Connection) -> str | None:
    """The installed extension version in this database, or None."""
    row = conn.execute("SELECT extversion FROM pg_extension WHERE extname = 'timescaledb'").fetchone()
    return row[0] if row else None


def is_hypertable(conn: psycopg.Connection, table: str) -> bool:
    if not timescaledb_version(conn):
        return False
    return bool(
        scalar(
            conn,
            """SELECT EXISTS (SELECT 1 FROM timescaledb_information.hypertables
                          WHERE hypertable_schema = current_schema() AND hypertable_name = %s)""",
            (table,),
        )
    )


def is_partitioned(conn: psycopg.Connection, table: str) -> bool:
    row = conn.execute("SELECT relkind = 'p' FROM pg_class WHERE oid = to_regclass(%s)", (table,)).fetchone()
    return bool(row and row[0])


def table_backend(conn: psycopg.Connection, table: str) -> str:
    """'timescaledb' for a hypertable, 'postgres' for a partitioned table; ValueError otherwise."""
    if is_partitioned(conn, table):
        return POSTGRES
    if is_hypertable(conn, table):
        return TIMESCALEDB
    raise ValueError(f"{table} is neither a hypertable nor a partitioned table")

"""Creating a time-series table on the database's backend (used by the migrations).

TimescaleDB: a regular table turned into a hypertable with the catalog's chunk width,
plus compression settings and policy where the catalog lists them.
Plain Postgres: a table partitioned by range on its time column, with a DEFAULT
partition, an index on the time column and partitions made ahead of time.
Everything is idempotent: a re-run migration changes nothing.
"""

from __future__ import annotations

import psycopg
from psycopg import sql

from app.db import scalar
from app.timeseries import backend, catalog, partitions


def create_table(conn: psycopg.Connection, name: str, columns: str, use: str) -> None:
    """CREATE the table `name` with `columns` (static SQL from a migration) on backend `use`."""
    info = catalog.table(name)
    ident, col = sql.Identifier(name), sql.Identifier(info.time_column)
    body = sql.SQL(columns)
    if use == backend.TIMESCALEDB:
        conn.execute(sql.SQL("CREATE TABLE IF NOT EXISTS {} ({})").format(ident, body))
        conn.execute(
            "SELECT create_hypertable(%s::regclass, by_range(%s, %s::interval), if_not_exists => true)",
            (name, info.time_column, info.chunk),
        )
        if info.compress_after is not None:
            conn.execute(
                sql.SQL(
                    "ALTER TABLE {} SET (timescaledb.compress, timescaledb.compress_segmentby = {}, "
                    "timescaledb.compress_orderby = {})"
                ).format(ident, sql.Literal(", ".join(info.compress_segmentby)), sql.Literal(info.compress_orderby))
            )
            conn.execute(
                "SELECT add_compression_policy(%s::regclass, %s::interval, if_not_exists => true)",
                (name, info.compress_after),
            )
        return
    exists = scalar(conn, "SELECT to_regclass(%s) IS NOT NULL", (name,))
    if exists and not backend.is_partitioned(conn, name):
        raise RuntimeError(f"{name} exists but is not partitioned; convert it before migrating")
    conn.execute(sql.SQL("CREATE TABLE IF NOT EXISTS {} ({}) PARTITION BY RANGE ({})").format(ident, body, col))
    conn.execute(
        sql.SQL("CREATE TABLE IF NOT EXISTS {} PARTITION OF {} DEFAULT").format(
            sql.Identifier(name + "_default"), ident
        )
    )
    conn.execute(
        sql.SQL("CREATE INDEX IF NOT EXISTS {} ON {} ({} DESC)").format(
            sql.Identifier(f"{name}_{info.time_column}_idx"), ident, col
        )
    )
    partitions.premake(conn, name)


def add_updated_at_trigger(conn: psycopg.Connection, name: str) -> None:
    """BEFORE UPDATE trigger keeping `updated_at` current (function from migration 0003)."""
    conn.execute(
        sql.SQL("DROP TRIGGER IF EXISTS {} ON {}").format(sql.Identifier(f"{name}_updated_at"), sql.Identifier(name))
    )
    conn.execute(
        sql.SQL("CREATE TRIGGER {} BEFORE UPDATE ON {} FOR EACH ROW EXECUTE FUNCTION store_touch_updated_at()").format(
            sql.Identifier(f"{name}_updated_at"), sql.Identifier(name)
        )
    )

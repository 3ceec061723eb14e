"""The physical layout of the time-series tables: partitions (plain Postgres) or chunks
(TimescaleDB), with planner row estimates and sizes. Read from the catalogs only: it
never opens (locks) a partition, so it never waits behind partition DDL or ingest.

Estimated rows come from the planner statistics (`pg_class.reltuples`, kept by
autovacuum/ANALYZE): a partition never analysed counts as null.
"""

from __future__ import annotations

from datetime import datetime

import psycopg

from app.db import scalar
from app.times import iso, utc
from app.timeseries import backend, catalog, partitions


def _pg_parts(conn: psycopg.Connection, table: str) -> list[dict]:
    stats = {
        name: (rows, size)
        for name, rows, size in conn.execute(
            """SELECT c.relname, CASE WHEN c.reltuples >= 0 THEN c.reltuples::bigint END,
                      pg_total_relation_size(c.oid)
               FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid WHERE i.inhparent = %s::regclass""",
            (table,),
        ).fetchall()
    }
    return [
        {
            "name": p.name,
            "range": {"start": iso(p.lo), "end": iso(p.hi)},
            "estimated_rows": stats.get(p.name, (None, 0))[0],
            "bytes": stats.get(p.name, (None, 0))[1],
            "compressed": False,
            "_lo": p.lo,
        }
        for p in partitions.list_partitions(conn, table)
    ]


def _ts_parts(conn: psycopg.Connection, table: str) -> list[dict]:
    rows = conn.execute(
        """SELECT c.chunk_name, c.range_start, c.range_end, c.is_compressed,
                  CASE WHEN k.reltuples >= 0 THEN k.reltuples::bigint END, s.total_bytes
           FROM timescaledb_information.chunks c
           LEFT JOIN pg_class k ON k.oid = format('%%I.%%I', c.chunk_schema, c.chunk_name)::regclass
           LEFT JOIN chunks_detailed_size(%s::regclass) s
                  ON s.chunk_schema = c.chunk_schema AND s.chunk_name = c.chunk_name
           WHERE c.hypertable_schema = current_schema() AND c.hypertable_name = %s""",
        (table, table),
    ).fetchall()
    return [
        {
            "name": name,
            "range": {"start": iso(lo), "end": iso(hi)},
            "estimated_rows": est,
            "bytes": size or 0,
            "compressed": bool(compressed),
            "_lo": utc(lo),
        }
        for name, lo, hi, compressed, est, size in rows
    ]


def _parts(conn: psycopg.Connection, table: str) -> tuple[str, list[dict]]:
    """(backend, partitions or chunks ordered newest first); ValueError if not set up."""
    use = backend.table_backend(conn, table)
    parts = _pg_parts(conn, table) if use == backend.POSTGRES else _ts_parts(conn, table)
    parts.sort(key=lambda p: p["_lo"], reverse=True)
    return use, parts


def _public(part: dict) -> dict:
    return {k: v for k, v in part.items() if not k.startswith("_")}


def tables(conn: psycopg.Connection) -> list[dict]:
    """GET /tables: each time-series table that exists, with its layout in figures."""
    out = []
    for name in catalog.TABLES:
        try:
            use, parts = _parts(conn, name)
        except ValueError:
            continue
        known = [p["estimated_rows"] for p in parts if p["estimated_rows"] is not None]
        doc = {
            "table": name,
            "backend": use,
            "partitions": len(parts),
            "estimated_rows": sum(known) if known or not parts else None,
            "bytes": sum(p["bytes"] for p in parts),
            "oldest_range": parts[-1]["range"] if parts else None,
            "newest_range": parts[0]["range"] if parts else None,
        }
        if use == backend.TIMESCALEDB:
            doc["compressed_chunks"] = sum(1 for p in parts if p["compressed"])
        else:
            default = partitions.default_partition(conn, name)
            doc["default_partition_rows"] = (
                scalar(
                    conn,
                    "SELECT CASE WHEN reltuples >= 0 THEN reltuples::bigint END FROM pg_class WHERE oid = %s::regclass",
                    (default,),
                )
                if default
                else None
            )
        out.append(doc)
    return out


def table_partitions(conn: psycopg.Connection, table: str, limit: int, before: datetime | None) -> dict:
    """GET /tables/<table>/partitions: newest first, `limit` of them, those starting before
    `before`; `next_before` continues the listing. ValueError: the table is not set up."""
    use, parts = _parts(conn, table)
    if before is not None:
        parts = [p for p in parts if p["_lo"] < before]
    page = parts[:limit]
    return {
        "table": table,
        "backend": use,
        "partitions": [_public(p) for p in page],
        "next_before": page[-1]["range"]["start"] if len(parts) > limit else None,
    }

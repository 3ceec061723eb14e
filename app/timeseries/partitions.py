"""Plain-Postgres range partitions of the time-series tables, managed by the store.

Design (see docs/retention.md):

- Every time-series table is `PARTITION BY RANGE (<time column>)` with partitions of the
  catalog's chunk width, aligned to the Unix epoch (like TimescaleDB chunks), named
  `<table>_pYYYYMMDD`, plus a DEFAULT partition `<table>_default`.
- The DEFAULT partition is what makes a plain INSERT of any timestamp succeed, however
  old or far ahead. It is only a landing zone: `sweep_default` (run by every retention
  job) moves its rows into proper partitions, so no data piles up where retention
  cannot drop whole partitions. Partitions are also made ahead of time (`premake`) and
  on demand (`ensure_range`, used by the backfill before it writes a range).
- A new partition is created as a standalone table, filled with the DEFAULT
  partition's rows of its range, then ATTACHed: that takes SHARE UPDATE EXCLUSIVE on
  the parent (ingest into other partitions keeps going) and ACCESS EXCLUSIVE only on
  the DEFAULT partition, for one short transaction per partition.
- All partition DDL of a table is serialised by a transaction-level advisory lock, and
  every lock is taken under the session's `lock_timeout`, capped at 1 s in the
  transactions that need ACCESS EXCLUSIVE (ingest queues behind such a request); lost
  races are retried (`app.timeseries.retry`).
"""

from __future__ import annotations

import bisect
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from functools import partial

import psycopg
from psycopg import sql

from app.times import EARLIEST, EPOCH, LATEST, align, utc
from app.timeseries import backend, catalog
from app.timeseries.retry import retrying, short_lock_timeout

LOCK_CLASS = 0x4D44_5350  # advisory lock namespace of partition DDL ('MDSP'), object = parent oid
PREMAKE_CHUNKS = 4  # partitions kept ready ahead of now
MAX_PER_CALL = 5000  # refuse absurd ranges (e.g. a typo of year 1000)


@dataclass(frozen=True)
class Partition:
    name: str
    lo: datetime
    hi: datetime


def partition_name(table: str, lo: datetime) -> str:
    lo = utc(lo)
    suffix = lo.strftime("%Y%m%d") if lo.time() == datetime.min.time() else lo.strftime("%Y%m%d_%H%M%S")
    return f"{table}_p{suffix}"


def list_partitions(conn: psycopg.Connection, table: str) -> list[Partition]:
    """The table's range partitions (not the DEFAULT one), ordered by range.

    Reads the catalog only: `pg_get_expr(..., 0)` deparses the constant bounds without
    opening (locking) the partitions, so it never waits behind partition DDL.
    """
    rows = conn.execute(
        r"""SELECT c.relname, b[1]::timestamptz, b[2]::timestamptz
            FROM pg_inherits i
            JOIN pg_class c ON c.oid = i.inhrelid
            CROSS JOIN LATERAL regexp_match(pg_get_expr(c.relpartbound, 0),
                                            'FROM \(''([^'']*)''\) TO \(''([^'']*)''\)') AS b
            WHERE i.inhparent = %s::regclass AND b IS NOT NULL
            ORDER BY 2""",
        (table,),
    ).fetchall()
    return [Partition(name, utc(lo), utc(hi)) for name, lo, hi in rows]


def default_partition(conn: psycopg.Connection, table: str) -> str | None:
    row = conn.execute(
        """SELECT c.relname FROM pg_partitioned_table p JOIN pg_class c ON c.oid = p.partdefid
           WHERE p.partrelid = %s::regclass""",
        (table,),
    ).fetchone()
    return row[0] if row else None


def _gaps(existing: list[Partition], lo: datetime, hi: datetime) -> list[tuple[datetime, datetime]]:
    """Parts of [lo, hi) no existing partition covers (`existing` sorted by lo)."""
    out, cursor = [], lo
    i = max(0, bisect.bisect_left([p.lo for p in existing], lo) - 1)
    for p in existing[i:]:
        if p.lo >= hi:
            break
        if p.hi <= cursor:
            continue
        if p.lo > cursor:
            out.append((cursor, p.lo))
        cursor = max(cursor, p.hi)
    if cursor < hi:
        out.append((cursor, hi))
    return out


def missing(conn: psycopg.Connection, table: str, starts: list[datetime]) -> list[tuple[datetime, datetime]]:
    """Of the chunk-aligned slots starting at `starts`, those no partition covers yet (what
    `ensure_range` would create; a backfill's dry run reports them)."""
    width = catalog.table(table).chunk
    existing = list_partitions(conn, table)
    return [(lo, lo + width) for lo in sorted(starts) if _gaps(existing, lo, lo + width)]


def _lock(conn: psycopg.Connection, table: str) -> None:
    conn.execute("SELECT pg_advisory_xact_lock(%s, %s::regclass::oid::int)", (LOCK_CLASS, table))


def _create(conn: psycopg.Connection, table: str, lo: datetime, hi: datetime) -> int:
    """Create the partitions covering the free parts of [lo, hi) in one transaction."""
    col = sql.Identifier(catalog.table(table).time_column)
    parent = sql.Identifier(table)
    with conn.transaction():
        short_lock_timeout(conn)
        _lock(conn, table)
        pieces = _gaps(list_partitions(conn, table), lo, hi)
        if not pieces:
            return 0
        conn.execute(sql.SQL("LOCK TABLE {} IN SHARE UPDATE EXCLUSIVE MODE").format(parent))
        default = default_partition(conn, table)
        if default:
            conn.execute(sql.SQL("LOCK TABLE {} IN ACCESS EXCLUSIVE MODE").format(sql.Identifier(default)))
        for plo, phi in pieces:
            name = sql.Identifier(partition_name(table, plo))
            bounds = sql.Identifier(partition_name(table, plo) + "_bounds")
            lo_lit, hi_lit = sql.Literal(plo), sql.Literal(phi)
            conn.execute(sql.SQL("CREATE TABLE {} (LIKE {} INCLUDING ALL)").format(name, parent))
            # The CHECK lets ATTACH skip scanning the new table; dropped right after.
            conn.execute(
                sql.SQL("ALTER TABLE {} ADD CONSTRAINT {} CHECK ({} >= {} AND {} < {})").format(
                    name, bounds, col, lo_lit, col, hi_lit
                )
            )
            if default:
                conn.execute(
                    sql.SQL(
                        "WITH moved AS (DELETE FROM {d} WHERE {c} >= %s AND {c} < %s RETURNING *) "
                        "INSERT INTO {n} SELECT * FROM moved"
                    ).format(d=sql.Identifier(default), c=col, n=name),
                    (plo, phi),
                )
            conn.execute(
                sql.SQL("ALTER TABLE {} ATTACH PARTITION {} FOR VALUES FROM ({}) TO ({})").format(
                    parent, name, lo_lit, hi_lit
                )
            )
            conn.execute(sql.SQL("ALTER TABLE {} DROP CONSTRAINT {}").format(name, bounds))
        return len(pieces)


def ensure_range(
    conn: psycopg.Connection,
    table: str,
    start: datetime,
    end: datetime,
    *,
    check: Callable[[], None] | None = None,
) -> int:
    """Make sure partitions cover [start, end]; return how many were created.

    A no-op (0) on a TimescaleDB hypertable, which makes its own chunks. Rows of the
    range already sitting in the DEFAULT partition are moved into the new partitions.

    Concurrency: safe to call from many sessions at once (per-table advisory lock;
    each partition is re-checked under it, so nobody creates one twice).
    Transactions: with an autocommit connection (recommended) each partition is
    created and committed in its own short transaction. Called on a connection that is
    inside a transaction, the work runs in savepoints: the partitions become visible to
    others, and the locks on the DEFAULT partition are released, only when the caller
    commits — keep that transaction short.
    Lock waits are bounded by the session's lock_timeout and retried; raises
    ValueError for a non-time-series table or a range needing more than MAX_PER_CALL
    partitions.
    """
    start, end = utc(start), utc(end)
    if start > end:
        raise ValueError("start must not be after end")
    if table not in catalog.TABLES:
        raise ValueError(f"{table} is not a time-series table")
    if start < EARLIEST or end >= LATEST:
        raise ValueError(f"range {start.isoformat()} .. {end.isoformat()} is outside the supported years")
    if backend.is_hypertable(conn, table):
        return 0
    if not backend.is_partitioned(conn, table):
        raise ValueError(f"{table} is not partitioned")
    width = catalog.table(table).chunk
    existing = list_partitions(conn, table)
    slots, lo = [], align(start, width)
    while lo <= end:
        if _gaps(existing, lo, lo + width):
            slots.append(lo)
        lo += width
    if len(slots) > MAX_PER_CALL:
        raise ValueError(f"range needs {len(slots)} partitions, more than {MAX_PER_CALL} in one call")
    created = 0
    for lo in slots:
        if check is not None:
            check()
        created += retrying(partial(_create, conn, table, lo, lo + width), f"create partition of {table}", check=check)
    return created


class TooManyPartitions(ValueError):
    """More partitions would be created than the caller allows."""

    def __init__(self, needed: int, allowed: int):
        self.needed, self.allowed = needed, allowed
        super().__init__(f"{needed} new partitions needed, more than {allowed}")


def ensure_slots(
    conn: psycopg.Connection,
    table: str,
    starts: list[datetime],
    *,
    check: Callable[[], None] | None = None,
    max_new: int = MAX_PER_CALL,
) -> int:
    """Make sure a partition exists for each slot starting at one of `starts` (aligned to
    the table's width) and for no other slot; return how many were created.

    Counts the missing ones first and raises TooManyPartitions, creating nothing, when
    they are more than `max_new`. Same rules as `ensure_range` otherwise."""
    if table not in catalog.TABLES:
        raise ValueError(f"{table} is not a time-series table")
    if not starts:
        return 0
    width = catalog.table(table).chunk
    slots = sorted({align(s, width) for s in starts})
    if slots[0] < EARLIEST or slots[-1] + width > LATEST:
        raise ValueError(f"times {slots[0].isoformat()} .. {slots[-1].isoformat()} are outside the supported years")
    if backend.is_hypertable(conn, table):
        return 0
    if not backend.is_partitioned(conn, table):
        raise ValueError(f"{table} is not partitioned")
    existing = list_partitions(conn, table)
    missing = [lo for lo in slots if _gaps(existing, lo, lo + width)]
    if len(missing) > max_new:
        raise TooManyPartitions(len(missing), max_new)
    created = 0
    for lo in missing:
        if check is not None:
            check()
        created += retrying(partial(_create, conn, table, lo, lo + width), f"create partition of {table}", check=check)
    return created


def premake(conn: psycopg.Connection, table: str, now: datetime | None = None) -> int:
    """Partitions from one chunk back to PREMAKE_CHUNKS ahead of now."""
    now = utc(now or datetime.now(UTC))
    width = catalog.table(table).chunk
    return ensure_range(conn, table, now - width, now + PREMAKE_CHUNKS * width)


def sweep_default(
    conn: psycopg.Connection,
    table: str,
    not_before: datetime | None = None,
    check: Callable[[], None] | None = None,
) -> dict:
    """Move the DEFAULT partition's rows into proper partitions (created as needed).

    Rows older than `not_before` (the retention cutoff) are left for retention to
    delete rather than given partitions of their own; rows at non-finite or absurd
    times (before year 1000, after 9000) stay in DEFAULT.
    """
    default = default_partition(conn, table)
    if default is None:
        return {"rows_in_default": 0, "partitions_created": 0}
    info = catalog.table(table)
    col = sql.Identifier(info.time_column)
    width_s = int(info.chunk.total_seconds())
    lower = max(EARLIEST, utc(not_before)) if not_before else EARLIEST
    rows = conn.execute(
        sql.SQL(
            "SELECT floor(extract(epoch FROM {c}) / %s)::bigint AS slot, count(*) FROM {d} "
            "WHERE {c} >= %s AND {c} < %s GROUP BY 1 ORDER BY 1"
        ).format(c=col, d=sql.Identifier(default)),
        (width_s, lower, LATEST),
    ).fetchall()
    created = 0
    for slot, _count in rows:
        lo = EPOCH + timedelta(seconds=slot * width_s)
        if check is not None:
            check()
        created += ensure_range(conn, table, lo, lo, check=check)
    return {"rows_moved": sum(c for _, c in rows), "partitions_created": created}


def retire(conn: psycopg.Connection, table: str, partition: str) -> str:
    """Detach a partition and rename it `<table>_retired_...`; return the new name.

    DETACH needs ACCESS EXCLUSIVE on the parent (CONCURRENTLY is not allowed next to a
    DEFAULT partition), so this is one very short transaction under lock_timeout.
    """
    retired = table + "_retired_" + partition[len(table) + 2 :]

    def detach() -> str:
        with conn.transaction():
            short_lock_timeout(conn)
            _lock(conn, table)
            conn.execute(
                sql.SQL("ALTER TABLE {} DETACH PARTITION {}").format(sql.Identifier(table), sql.Identifier(partition))
            )
            conn.execute(
                sql.SQL("ALTER TABLE {} RENAME TO {}").format(sql.Identifier(partition), sql.Identifier(retired))
            )
        return retired

    return retrying(detach, f"detach {partition}")


def retired_tables(conn: psycopg.Connection, table: str) -> list[str]:
    """Detached partitions waiting to be dropped (left by retention, also after a crash)."""
    rows = conn.execute(
        """SELECT relname FROM pg_class
           WHERE relnamespace = current_schema()::regnamespace AND relkind = 'r' AND NOT relispartition
             AND starts_with(relname, %s) ORDER BY relname""",
        (table + "_retired_",),
    ).fetchall()
    return [r[0] for r in rows]

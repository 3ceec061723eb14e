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
- Partitions are sized to the data where a load says how fine its rows are (`plan`):
  history of hourly or coarser bars gets calendar-month or calendar-year partitions,
  so 25 years of daily bars make 25 partitions, not 1,300.
- A new partition is created as a standalone table, filled with the DEFAULT
  partition's rows of its range (when it has any), then ATTACHed: that takes SHARE
  UPDATE EXCLUSIVE on the parent (ingest into other partitions keeps going) and ACCESS
  EXCLUSIVE only on the DEFAULT partition, for one short transaction per GROUP of
  partitions.
- All partition DDL of a table is serialised by a transaction-level advisory lock, and
  every lock is taken under the session's `lock_timeout`, capped at 1 s in the
  transactions that need ACCESS EXCLUSIVE (ingest queues behind such a request); lost
  races are retried (`app.timeseries.retry`).
"""

from __future__ import annotations

import bisect
import json
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from functools import partial

import psycopg
from psycopg import sql

from app.db import scalar
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
    # a TimescaleDB chunk's schema; None for a partition (in the parent's schema). Not
    # compared: a partition (chunk) is its name and range.
    schema: str | None = field(default=None, compare=False)

    @property
    def ident(self) -> sql.Identifier:
        return sql.Identifier(self.schema, self.name) if self.schema else sql.Identifier(self.name)


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


def holding(conn: psycopg.Connection, table: str, lo: datetime, hi: datetime) -> str | None:
    """The range partition whose range holds every time in [lo, hi], or None (rows of
    several partitions, or of the DEFAULT one)."""
    for part in list_partitions(conn, table):
        if part.lo <= lo and hi < part.hi:
            return part.name
    return None


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


def _lock(conn: psycopg.Connection, table: str) -> None:
    conn.execute("SELECT pg_advisory_xact_lock(%s, %s::regclass::oid::int)", (LOCK_CLASS, table))


# --- Partitions sized to the data -------------------------------------------------------
#
# A load says how fine its rows are (`grain`: the finest bar interval of a batch). Rows
# finer than an hour get partitions of the table's width (a week for bars_ohlcv, epoch
# aligned); hourly to sub-daily rows get calendar months; daily and coarser rows get
# calendar years. Wide partitions are only made for history: none reaches past
# `horizon(now)` (the start of the previous week), so live data always lands in partitions
# of the table's width. A wide partition fills only the free part of its month or year
# (existing partitions are never split or overlapped). See docs/retention.md.

HOUR = timedelta(hours=1)
DAY = timedelta(days=1)
GROUP = 32  # partitions created in one transaction (one lock of the DEFAULT partition)


def horizon(now: datetime, width: timedelta) -> datetime:
    """Wide partitions end no later than this: the start of the slot before now's."""
    return align(now, width) - width


def _calendar(ts: datetime, grain: timedelta) -> tuple[datetime, datetime]:
    """The calendar month (grain under a day) or year containing `ts`."""
    ts = utc(ts)
    if grain < DAY:
        lo = datetime(ts.year, ts.month, 1, tzinfo=UTC)
        hi = datetime(ts.year + (ts.month == 12), ts.month % 12 + 1, 1, tzinfo=UTC)
    else:
        lo, hi = datetime(ts.year, 1, 1, tzinfo=UTC), datetime(ts.year + 1, 1, 1, tzinfo=UTC)
    return lo, hi


def plan(
    existing: list[Partition],
    days: list[datetime],
    width: timedelta,
    grain: timedelta | None = None,
    now: datetime | None = None,
) -> list[tuple[datetime, datetime]]:
    """The partitions to create so that each UTC day containing one of `days` is covered,
    for rows of `grain` (None: unknown) in a table of partition `width`; pure, ordered.

    An uncovered day gets, if it ends before `horizon(now)` and `grain` is an hour or
    more, the free parts of its calendar month (grain under a day) or year that touch
    it; otherwise the free parts of its slot of the table's width."""
    wide = grain is not None and grain >= HOUR
    limit = horizon(utc(now or datetime.now(UTC)), width)
    taken = sorted(existing, key=lambda p: p.lo)
    out: list[tuple[datetime, datetime]] = []
    for lo in sorted({align(d, DAY) for d in days}):
        hi = lo + DAY
        if not _gaps(taken, lo, hi):
            continue
        if wide and hi <= limit:
            assert grain is not None
            wlo, whi = _calendar(lo, grain)
            whi = min(whi, limit)
        else:
            wlo = align(lo, width)
            whi = wlo + width
        for plo, phi in _gaps(taken, wlo, whi):
            if plo < hi and phi > lo:
                out.append((plo, phi))
                bisect.insort(taken, Partition("", plo, phi), key=lambda p: p.lo)
    return sorted(out)


def existing(conn: psycopg.Connection, table: str) -> list[Partition]:
    """The table's partitions, or its chunks on a TimescaleDB hypertable, as ranges."""
    if backend.is_hypertable(conn, table):
        return chunks(conn, table)
    return list_partitions(conn, table)


def chunks(conn: psycopg.Connection, table: str) -> list[Partition]:
    """A hypertable's chunks as ranges, ordered (catalog reads only)."""
    rows = conn.execute(
        """SELECT chunk_name, range_start, range_end, chunk_schema FROM timescaledb_information.chunks
           WHERE hypertable_schema = current_schema() AND hypertable_name = %s ORDER BY range_start""",
        (table,),
    ).fetchall()
    return [Partition(name, utc(lo), utc(hi), schema) for name, lo, hi, schema in rows]


def _create_group(conn: psycopg.Connection, table: str, pieces: list[tuple[datetime, datetime]]) -> int:
    """Create the free parts of `pieces` as partitions, all in one transaction: one
    advisory lock, one lock of the parent and of the DEFAULT partition. Rows of their
    ranges sitting in the DEFAULT partition move into them."""
    col = sql.Identifier(catalog.table(table).time_column)
    parent = sql.Identifier(table)
    with conn.transaction():
        short_lock_timeout(conn)
        _lock(conn, table)
        existing = list_partitions(conn, table)
        todo = [g for lo, hi in pieces for g in _gaps(existing, lo, hi)]
        if not todo:
            return 0
        conn.execute(sql.SQL("LOCK TABLE {} IN SHARE UPDATE EXCLUSIVE MODE").format(parent))
        default = default_partition(conn, table)
        occupied = False
        if default:
            conn.execute(sql.SQL("LOCK TABLE {} IN ACCESS EXCLUSIVE MODE").format(sql.Identifier(default)))
            occupied = bool(scalar(conn, sql.SQL("SELECT EXISTS (SELECT FROM {})").format(sql.Identifier(default))))
        # All tables first, then all ATTACHes (every ATTACH invalidates the parent's cached
        # partition list, which the next statement naming the parent rebuilds), sent as one
        # batch of statements: one round trip for the group.
        made: list[sql.Composable] = []
        attach: list[sql.Composable] = []
        for plo, phi in todo:
            name = sql.Identifier(partition_name(table, plo))
            lo_lit, hi_lit = sql.Literal(plo), sql.Literal(phi)
            made.append(sql.SQL("CREATE TABLE {} (LIKE {} INCLUDING ALL)").format(name, parent))
            if occupied and default:
                # The CHECK lets ATTACH skip scanning the filled table; dropped right after.
                made.append(
                    sql.SQL("ALTER TABLE {} ADD CONSTRAINT {} CHECK ({} >= {} AND {} < {})").format(
                        name, _bounds(table, plo), col, lo_lit, col, hi_lit
                    )
                )
                made.append(
                    sql.SQL(
                        "WITH moved AS (DELETE FROM {d} WHERE {c} >= {lo} AND {c} < {hi} RETURNING *) "
                        "INSERT INTO {n} SELECT * FROM moved"
                    ).format(d=sql.Identifier(default), c=col, n=name, lo=lo_lit, hi=hi_lit)
                )
            attach.append(
                sql.SQL("ALTER TABLE {} ATTACH PARTITION {} FOR VALUES FROM ({}) TO ({})").format(
                    parent, name, lo_lit, hi_lit
                )
            )
            if occupied:
                attach.append(sql.SQL("ALTER TABLE {} DROP CONSTRAINT {}").format(name, _bounds(table, plo)))
        conn.execute(sql.SQL(";\n").join(made + attach))
        return len(todo)


def _bounds(table: str, lo: datetime) -> sql.Identifier:
    return sql.Identifier(partition_name(table, lo) + "_bounds")


def _create_chunks(conn: psycopg.Connection, table: str, pieces: list[tuple[datetime, datetime]]) -> int:
    """TimescaleDB: create empty chunks of exactly these ranges (the free parts of them),
    in one transaction, with `_timescaledb_functions.create_chunk` (the function
    TimescaleDB's own tooling uses to make a chunk of given slices)."""
    col = catalog.table(table).time_column
    with conn.transaction():
        short_lock_timeout(conn)
        _lock(conn, table)
        existing = chunks(conn, table)
        todo = [g for lo, hi in pieces for g in _gaps(existing, lo, hi)]
        for plo, phi in todo:
            slices = {col: [_micros(plo), _micros(phi)]}
            conn.execute(
                "SELECT _timescaledb_functions.create_chunk(%s::regclass, %s::jsonb)", (table, json.dumps(slices))
            )
        return len(todo)


def _micros(ts: datetime) -> int:
    """TimescaleDB's internal time: microseconds since the Unix epoch."""
    return (utc(ts) - EPOCH) // timedelta(microseconds=1)


Progress = Callable[[int, int], None]  # (partitions created so far, partitions needed)


def create(
    conn: psycopg.Connection,
    table: str,
    pieces: list[tuple[datetime, datetime]],
    *,
    check: Callable[[], None] | None = None,
    progress: Progress | None = None,
) -> int:
    """Create these partitions (chunks on a hypertable) in transactions of GROUP each,
    reporting (created, needed) after each; return how many were created (a piece a
    concurrent session made meanwhile is skipped)."""
    make = _create_chunks if backend.is_hypertable(conn, table) else _create_group
    created = 0
    if progress is not None:
        progress(0, len(pieces))
    for i in range(0, len(pieces), GROUP):
        group = pieces[i : i + GROUP]
        if check is not None:
            check()
        created += retrying(partial(make, conn, table, group), f"create partitions of {table}", check=check)
        if progress is not None:
            progress(min(i + GROUP, len(pieces)), len(pieces))
    return created


def ensure_range(
    conn: psycopg.Connection,
    table: str,
    start: datetime,
    end: datetime,
    *,
    check: Callable[[], None] | None = None,
) -> int:
    """Make sure partitions of the table's width cover [start, end]; return how many
    were created.

    A no-op (0) on a TimescaleDB hypertable, which makes its own chunks. Rows of the
    range already sitting in the DEFAULT partition are moved into the new partitions.

    Concurrency: safe to call from many sessions at once (per-table advisory lock;
    each partition is re-checked under it, so nobody creates one twice).
    Transactions: with an autocommit connection (recommended) partitions are created and
    committed GROUP at a time, each group in one short transaction. Called on a
    connection that is inside a transaction, the work runs in savepoints: the
    partitions become visible to others, and the locks on the DEFAULT partition are
    released, only when the caller commits — keep that transaction short.
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
            slots.append((lo, lo + width))
        lo += width
    if len(slots) > MAX_PER_CALL:
        raise ValueError(f"range needs {len(slots)} partitions, more than {MAX_PER_CALL} in one call")
    return create(conn, table, slots, check=check)


class TooManyPartitions(ValueError):
    """More partitions would be created than the caller allows."""

    def __init__(self, needed: int, allowed: int):
        self.needed, self.allowed = needed, allowed
        super().__init__(f"{needed} new partitions needed, more than {allowed}")


def ensure_days(
    conn: psycopg.Connection,
    table: str,
    days: list[datetime],
    *,
    grain: timedelta | None = None,
    now: datetime | None = None,
    check: Callable[[], None] | None = None,
    progress: Progress | None = None,
    max_new: int = MAX_PER_CALL,
) -> int:
    """Make sure partitions cover each UTC day containing one of `days`, sized to the
    rows' `grain` (see `plan`), and no other day's slot; return how many were created.

    Counts the missing ones first and raises TooManyPartitions, creating nothing, when
    they are more than `max_new`. On a TimescaleDB hypertable only the chunks TimescaleDB
    would not make itself (wider or unaligned: history of an hour's grain or coarser)
    are made ahead; it makes the others as rows arrive. Same rules as `ensure_range`
    otherwise."""
    if table not in catalog.TABLES:
        raise ValueError(f"{table} is not a time-series table")
    if not days:
        return 0
    width = catalog.table(table).chunk
    first, last = min(days), max(days)
    if align(first, width) < EARLIEST or align(last, width) + width > LATEST:
        raise ValueError(f"times {utc(first).isoformat()} .. {utc(last).isoformat()} are outside the supported years")
    hyper = backend.is_hypertable(conn, table)
    if not hyper and not backend.is_partitioned(conn, table):
        raise ValueError(f"{table} is not partitioned")
    pieces = plan(existing(conn, table), days, width, grain, now)
    if hyper:
        pieces = [(lo, hi) for lo, hi in pieces if not own_chunk(lo, hi, width)]
    if len(pieces) > max_new:
        raise TooManyPartitions(len(pieces), max_new)
    if not pieces:
        return 0
    return create(conn, table, pieces, check=check, progress=progress)


def own_chunk(lo: datetime, hi: datetime, width: timedelta) -> bool:
    """Whether TimescaleDB would make a chunk of exactly [lo, hi) itself (aligned, of the
    table's width)."""
    return hi - lo == width and lo == align(lo, width)


def premake(conn: psycopg.Connection, table: str, now: datetime | None = None) -> int:
    """Partitions of the table's width from one back to PREMAKE_CHUNKS ahead of now."""
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


def _all_visible(conn: psycopg.Connection, idents: list[sql.Composable]) -> list[bool]:
    """For each table, whether VACUUM has marked all its pages all-visible (and it has an
    index): then its rows can be counted from its smallest index, without reading it."""
    names = [i.as_string(conn) for i in idents]
    rows = conn.execute(
        """SELECT c.relpages > 0 AND c.relallvisible >= c.relpages AND EXISTS (SELECT FROM pg_index i WHERE i.indrelid = c.oid)
           FROM unnest(%s::text[]) WITH ORDINALITY AS t(name, n) JOIN pg_class c ON c.oid = t.name::regclass
           ORDER BY t.n""",
        (names,),
    ).fetchall()
    return [bool(r[0]) for r in rows]


def _count_union(conn: psycopg.Connection, idents: list[sql.Composable], from_index: bool) -> int:
    """count(*) over the UNION ALL of these tables, in one query: Postgres can then run
    it as a Parallel Append of (parallel) scans, on the server's parallel workers, where
    one count per table would be serial. JIT is off for it (a long scan of many tables
    costs above jit_above_cost, and compiling takes longer than counting). `from_index`:
    sequential and bitmap scans are turned off, so all-visible tables are counted from
    their smallest index (the planner, costing index pages as random reads, would not
    choose that itself)."""
    union = sql.SQL(" UNION ALL ").join(sql.SQL("SELECT FROM {}").format(i) for i in idents)
    query = sql.SQL("SELECT count(*) FROM ({}) AS rows").format(union)
    settings = {"jit": "off"}
    if from_index:
        settings.update(enable_seqscan="off", enable_bitmapscan="off")
    names = list(settings)
    with conn.transaction():
        saved = conn.execute(
            sql.SQL("SELECT {}").format(
                sql.SQL(", ").join(sql.SQL("current_setting({})").format(sql.Literal(n)) for n in names)
            )
        ).fetchone()
        assert saved is not None
        setter = sql.SQL("SELECT {}").format(
            sql.SQL(", ").join(sql.SQL("set_config({}, %s, true)").format(sql.Literal(n)) for n in names)
        )
        conn.execute(setter, [settings[n] for n in names])
        count = int(scalar(conn, query))
        conn.execute(setter, list(saved))
    return count


def count_many(conn: psycopg.Connection, tables: list[tuple[str | None, str]]) -> int:
    """Exact total row count of these tables ((schema or None, name) each), in at most
    two queries: the all-visible ones (history at rest) from their smallest index, the
    others (e.g. freshly loaded) with sequential scans; each query one count over the
    UNION ALL of its tables, so that it can run in parallel (`_count_union`)."""
    if not tables:
        return 0
    idents: list[sql.Composable] = [sql.Identifier(s, n) if s else sql.Identifier(n) for s, n in tables]
    visible = _all_visible(conn, idents)
    total = 0
    for from_index in (True, False):
        part = [i for i, v in zip(idents, visible, strict=True) if v == from_index]
        if part:
            total += _count_union(conn, part, from_index)
    return total


def count_rows(conn: psycopg.Connection, name: str, schema: str | None = None) -> int:
    """Exact row count of one table (partition, chunk). A table VACUUM has marked
    all-visible (old history at rest) is counted from its smallest index, without reading
    the table: about half the time of a sequential scan (see `count_many`)."""
    return count_many(conn, [(schema, name)])


def drop(conn: psycopg.Connection, table: str, names: list[str]) -> tuple[list[str], int]:
    """Detach and drop these partitions, GROUP per transaction; return the names dropped
    (a name already gone is skipped) and the rows they held.

    DETACH needs ACCESS EXCLUSIVE on the parent (CONCURRENTLY is not allowed next to a
    DEFAULT partition), so each group is one short transaction under lock_timeout: the
    group's partitions are detached (one round trip), their rows counted together under
    that lock (`count_many`: one query, in parallel where the server allows), so the count
    is exactly what is dropped, then they are dropped (one round trip). Detach and drop
    commit together: nothing is left half done."""
    dropped: list[str] = []
    rows = 0

    def group(batch: list[str]) -> tuple[list[str], int]:
        with conn.transaction():
            short_lock_timeout(conn)
            _lock(conn, table)
            attached = {p.name for p in list_partitions(conn, table)}
            todo = [name for name in batch if name in attached]
            if not todo:
                return [], 0
            parent = sql.Identifier(table)
            conn.execute(
                sql.SQL(";\n").join(
                    sql.SQL("ALTER TABLE {} DETACH PARTITION {}").format(parent, sql.Identifier(name)) for name in todo
                )
            )
            count = count_many(conn, [(None, name) for name in todo])
            conn.execute(sql.SQL("DROP TABLE {}").format(sql.SQL(", ").join(sql.Identifier(n) for n in todo)))
        return todo, count

    for i in range(0, len(names), GROUP):
        done, n = retrying(partial(group, names[i : i + GROUP]), f"drop partitions of {table}")
        dropped += done
        rows += n
    return dropped, rows


def drop_chunks(
    conn: psycopg.Connection, table: str, cutoff: datetime, *, check: Callable[[], None] | None = None
) -> tuple[list[str], int]:
    """TimescaleDB: drop the hypertable's chunks ending at or before `cutoff`
    (`drop_chunks(older_than => cutoff)`); return their names (schema.chunk) and the rows
    they held.

    One transaction under lock_timeout: SHARE ROW EXCLUSIVE on the hypertable itself (no
    row can come in through it, so no chunk is made meanwhile), then the chunks are listed
    and ACCESS EXCLUSIVE taken on them (as `drop_chunks` does; other chunks are not
    locked), so they are counted (in one query, `count_many`) with no writer in between
    and the count is exactly what is dropped."""

    def run() -> tuple[list[str], int]:
        with conn.transaction():
            short_lock_timeout(conn)
            _lock(conn, table)
            # ONLY: the hypertable itself (no chunk can be made meanwhile); LOCK TABLE would
            # also lock every chunk, and wait for autovacuum on the freshly loaded ones
            conn.execute(sql.SQL("LOCK TABLE ONLY {} IN SHARE ROW EXCLUSIVE MODE").format(sql.Identifier(table)))
            old = conn.execute(
                """SELECT chunk_schema, chunk_name FROM timescaledb_information.chunks
                   WHERE hypertable_schema = current_schema() AND hypertable_name = %s AND range_end <= %s""",
                (table, cutoff),
            ).fetchall()
            if not old:
                return [], 0
            # the lock drop_chunks takes on them, taken before they are counted
            conn.execute(
                sql.SQL("LOCK TABLE ONLY {} IN ACCESS EXCLUSIVE MODE").format(
                    sql.SQL(", ").join(sql.Identifier(s, n) for s, n in old)
                )
            )
            rows = count_many(conn, [(s, n) for s, n in old])
            dropped = [
                r[0]
                for r in conn.execute(
                    "SELECT drop_chunks(%s::regclass, older_than => %s::timestamptz)", (table, cutoff)
                ).fetchall()
            ]
            if sorted(dropped) != sorted(f"{s}.{n}" for s, n in old):
                # cannot happen under the lock; never report a count that is not of what was dropped
                raise RuntimeError(f"drop_chunks of {table} dropped {dropped}, not the {len(old)} chunks counted")
            return dropped, rows

    return retrying(run, f"drop chunks of {table}", check=check)


TRIM_MAX_ROWS = 200_000  # rows a trim copies under the parent's ACCESS EXCLUSIVE lock, at most


def _trimmed_start(part: Partition, cutoff: datetime) -> datetime | None:
    """Where a trimmed `part` would start: the cutoff's day; None when the cutoff is not
    inside it, or falls on its first day (nothing to gain)."""
    start = max(part.lo, cutoff.replace(hour=0, minute=0, second=0, microsecond=0))
    return start if part.lo < cutoff < part.hi and start > part.lo else None


def _worth_trimming(conn: psycopg.Connection, part: Partition, col: sql.Identifier, cutoff: datetime) -> int | None:
    """The rows of a partition (chunk) older than the cutoff, when keeping its newer rows
    costs less than deleting those (fewer newer rows, at most TRIM_MAX_ROWS); else None.
    The newer rows are counted through the time index, the whole with `count_rows`."""
    kept = int(scalar(conn, sql.SQL("SELECT count(*) FROM {} WHERE {} >= %s").format(part.ident, col), (cutoff,)))
    if kept > TRIM_MAX_ROWS:
        return None
    removed = count_rows(conn, part.name, part.schema) - kept
    return removed if kept < removed else None


def trim(conn: psycopg.Connection, table: str, part: Partition, cutoff: datetime) -> int | None:
    """Remove the rows of `part` older than `cutoff` by keeping the others: when fewer
    rows are kept than removed (and at most TRIM_MAX_ROWS), the newer rows are copied into
    a new partition starting at the cutoff's day, and the old one is dropped whole.
    Returns the rows removed, or None when deleting is the cheaper way (nothing done).

    One transaction under ACCESS EXCLUSIVE on the parent (DETACH needs it): the rows are
    counted, copied and dropped with no writer in between, so the count is exact and
    nothing is left half done. The copy is of unchanged rows, so no rollup changes."""
    cutoff = utc(cutoff)
    new_lo = _trimmed_start(part, cutoff)
    if new_lo is None:
        return None
    col = sql.Identifier(catalog.table(table).time_column)
    parent, old, new = sql.Identifier(table), sql.Identifier(part.name), sql.Identifier(partition_name(table, new_lo))

    def run() -> int | None:
        with conn.transaction() as tx:
            short_lock_timeout(conn)
            _lock(conn, table)
            if part not in list_partitions(conn, table):
                return None  # dropped or replaced meanwhile
            conn.execute(sql.SQL("LOCK TABLE {} IN ACCESS EXCLUSIVE MODE").format(parent))
            removed = _worth_trimming(conn, part, col, cutoff)
            if removed is None:
                raise psycopg.Rollback(tx)
            lo_lit, hi_lit = sql.Literal(new_lo), sql.Literal(part.hi)
            conn.execute(
                sql.SQL(";\n").join(
                    [
                        sql.SQL("ALTER TABLE {} DETACH PARTITION {}").format(parent, old),
                        # no indexes while the rows go in: ATTACH builds them after, sorted (faster
                        # than inserting every row into each index)
                        sql.SQL("CREATE TABLE {} (LIKE {} INCLUDING ALL EXCLUDING INDEXES)").format(new, parent),
                        sql.SQL("INSERT INTO {} SELECT * FROM {} WHERE {} >= {}").format(
                            new, old, col, sql.Literal(cutoff)
                        ),
                        sql.SQL("DROP TABLE {}").format(old),
                        # the CHECK lets ATTACH skip scanning the new table; dropped right after
                        sql.SQL("ALTER TABLE {} ADD CONSTRAINT {} CHECK ({} >= {} AND {} < {})").format(
                            new, _bounds(table, new_lo), col, lo_lit, col, hi_lit
                        ),
                        sql.SQL("ALTER TABLE {} ATTACH PARTITION {} FOR VALUES FROM ({}) TO ({})").format(
                            parent, new, lo_lit, hi_lit
                        ),
                        sql.SQL("ALTER TABLE {} DROP CONSTRAINT {}").format(new, _bounds(table, new_lo)),
                    ]
                )
            )
            return removed
        return None  # rolled back: deleting is cheaper

    return retrying(run, f"trim {part.name}")


def trim_chunk(conn: psycopg.Connection, table: str, chunk: Partition, cutoff: datetime) -> int | None:
    """`trim` for a TimescaleDB chunk (compressed or not; `chunk.schema` set): when fewer of its rows are kept
    than removed (and at most TRIM_MAX_ROWS), the newer rows are set aside, the chunk is
    dropped whole (`drop_chunks` over exactly its range), a chunk from the cutoff's day to
    its old end is created (`_timescaledb_functions.create_chunk`) and the rows go back in
    through the hypertable. Returns the rows removed, or None (nothing done).

    One transaction holding SHARE ROW EXCLUSIVE on the hypertable: writers wait for it
    (readers do not), so the count is exact and no row arrives between the copy and the
    drop. Re-inserting the kept rows invalidates their buckets for the continuous
    aggregates, which recompute them from the same rows."""
    cutoff = utc(cutoff)
    new_lo = _trimmed_start(chunk, cutoff)
    if new_lo is None:
        return None
    time_column = catalog.table(table).time_column
    col = sql.Identifier(time_column)
    parent, old = sql.Identifier(table), chunk.ident

    def run() -> int | None:
        with conn.transaction() as tx:
            short_lock_timeout(conn)
            _lock(conn, table)
            conn.execute(sql.SQL("LOCK TABLE {} IN SHARE ROW EXCLUSIVE MODE").format(parent))
            if chunk not in chunks(conn, table):
                return None  # dropped or replaced meanwhile
            removed = _worth_trimming(conn, chunk, col, cutoff)
            if removed is None:
                raise psycopg.Rollback(tx)
            conn.execute(
                sql.SQL(
                    "CREATE TEMPORARY TABLE store_trim_kept ON COMMIT DROP AS SELECT * FROM {} WHERE {} >= %s"
                ).format(old, col),
                (cutoff,),
            )
            dropped = conn.execute(
                "SELECT drop_chunks(%s::regclass, older_than => %s::timestamptz, newer_than => %s::timestamptz)",
                (table, chunk.hi, chunk.lo),
            ).fetchall()
            if [r[0] for r in dropped] != [f"{chunk.schema}.{chunk.name}"]:
                raise RuntimeError(f"trimming {chunk.name} would drop {dropped}")  # rolls back: nothing done
            conn.execute(
                "SELECT _timescaledb_functions.create_chunk(%s::regclass, %s::jsonb)",
                (table, json.dumps({time_column: [_micros(new_lo), _micros(chunk.hi)]})),
            )
            conn.execute(sql.SQL("INSERT INTO {} SELECT * FROM store_trim_kept").format(parent))
            return removed
        return None  # rolled back: deleting is cheaper

    return retrying(run, f"trim {chunk.name}")


def retire(conn: psycopg.Connection, table: str, partition: str) -> str:
    """Detach a partition and rename it `<table>_retired_...`; return the new name. (Left
    from the store's earlier retention, which detached and dropped in two steps: a run
    that died between them left such tables, which every run now drops.)
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

"""Retention: the policies (one row per time-series table) and removing what they expire.

For a table whose policy is enabled, `apply_table` removes every row older than
cutoff = now() - retain:

1. when there are rows older than the cutoff, widens the frozen range of the rollups
   first (`frozen_from` = the oldest of them, `last_cutoff` = the cutoff), under the
   exclusive watermark lock, so no rollup refresh recomputes buckets from rows about
   to go (rollups are the long-term record and keep the dropped ranges). A run with
   nothing to remove moves neither: history loaded later still rolls up;
2. plain Postgres: makes the partitions ahead of time and sweeps the DEFAULT
   partition (rows newer than the cutoff move into proper partitions);
3. drops whole partitions / chunks that end at or before the cutoff;
4. deletes, in bounded batches, the rows older than the cutoff in the partition or
   chunk that straddles it (and in the DEFAULT partition).

Every step is a short transaction under the session's lock_timeout and is retried on
lock timeouts and deadlocks, so ingest is never queued behind retention for long.
A dry run computes the same figures and changes nothing.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime, timedelta
from functools import partial

import psycopg
from psycopg import sql
from psycopg.types.json import Jsonb

from app.db import scalar
from app.intervals import format_interval
from app.times import iso, utc
from app.timeseries import backend, catalog, partitions, rollups
from app.timeseries.retry import retrying

RUN_LOCK = 0x4D44_5352  # advisory namespace: one retention run per table ('MDSR'), object = table oid
BATCH_ROWS = 20_000

Check = Callable[[], None]


# -- policies ------------------------------------------------------------------------------
_POLICY_COLUMNS = "table_name, retain, enabled, updated_at, last_applied_at, last_cutoff, last_result"


def _policy_doc(row: tuple) -> dict:
    name, retain, enabled, updated, applied, cutoff, last = row
    info = catalog.TABLES.get(name)
    return {
        "table": name,
        "retain": format_interval(retain),
        "retain_seconds": int(retain.total_seconds()),
        "enabled": enabled,
        "time_column": info.time_column if info else None,
        "chunk_interval": format_interval(info.chunk) if info else None,
        "default_retain": format_interval(info.default_retain) if info else None,
        "updated_at": iso(updated),
        "last_applied_at": iso(applied),
        "watermark": iso(cutoff),
        "last_result": last,
    }


def policies(conn: psycopg.Connection) -> list[dict]:
    rows = conn.execute(f"SELECT {_POLICY_COLUMNS} FROM store_retention_policies ORDER BY table_name").fetchall()
    docs = [_policy_doc(r) for r in rows if r[0] in catalog.TABLES]
    for doc in docs:
        doc["backend"] = _backend_or_none(conn, doc["table"])
    return docs


def _backend_or_none(conn: psycopg.Connection, table: str) -> str | None:
    try:
        return backend.table_backend(conn, table)
    except ValueError:
        return None


def get_policy(conn: psycopg.Connection, table: str) -> dict | None:
    row = conn.execute(
        f"SELECT {_POLICY_COLUMNS} FROM store_retention_policies WHERE table_name = %s", (table,)
    ).fetchone()
    return _policy_doc(row) if row else None


def set_policy(conn: psycopg.Connection, table: str, retain: timedelta, enabled: bool | None) -> dict:
    """Create or replace a table's policy; `enabled=None` keeps the current value (new: true)."""
    row = conn.execute(
        f"""INSERT INTO store_retention_policies (table_name, retain, enabled) VALUES (%s, %s, coalesce(%s, true))
            ON CONFLICT (table_name) DO UPDATE
            SET retain = EXCLUDED.retain,
                enabled = coalesce(%s, store_retention_policies.enabled),
                updated_at = now()
            RETURNING {_POLICY_COLUMNS}""",
        (table, retain, enabled, enabled),
    ).fetchone()
    assert row is not None  # an upsert with RETURNING always returns its row
    return _policy_doc(row)


# -- applying one table ----------------------------------------------------------------------
class _Run:
    """State of one table's retention pass."""

    def __init__(
        self,
        conn: psycopg.Connection,
        table: str,
        dry_run: bool,
        check: Check | None,
        progress: Callable[..., None] | None,
        batch_rows: int,
        now: datetime | None = None,
    ):
        self.conn, self.table, self.dry_run, self.now = conn, table, dry_run, now
        self.info = catalog.table(table)
        self.check = check or (lambda: None)
        self.progress = progress or (lambda **kw: None)
        self.batch_rows = batch_rows
        self.rows_removed = 0
        self.dropped: list[str] = []

    def note(self, phase: str) -> None:
        self.progress(table=self.table, phase=phase, rows_removed=self.rows_removed, dropped=len(self.dropped))

    def count(self, relation: str, cutoff: datetime | None = None) -> int:
        if cutoff is None:
            return partitions.count_rows(self.conn, relation)
        q = sql.SQL("SELECT count(*) FROM {}").format(sql.Identifier(relation))
        q += sql.SQL(" WHERE {} < %s").format(sql.Identifier(self.info.time_column))
        return scalar(self.conn, q, (cutoff,))

    def _delete_loop(self, stmt: sql.Composed, params: tuple, what: str) -> int:
        """Run a bounded DELETE (one transaction each) until it deletes nothing."""
        removed = 0
        self.note("deleting")
        while True:
            self.check()
            n = retrying(lambda: self.conn.execute(stmt, params).rowcount, what, check=self.check)
            removed += n
            self.rows_removed += n
            self.note("deleting")
            if n == 0:
                return removed

    def delete_batches(self, relation: str, cutoff: datetime, schema: str | None = None) -> int:
        """Delete rows of `relation` (a partition, or an uncompressed chunk in `schema`) older
        than cutoff, batch_rows per transaction."""
        ident = sql.Identifier(schema, relation) if schema else sql.Identifier(relation)
        stmt = sql.SQL("DELETE FROM {r} WHERE ctid = ANY (ARRAY(SELECT ctid FROM {r} WHERE {c} < %s LIMIT %s))").format(
            r=ident, c=sql.Identifier(self.info.time_column)
        )
        return self._delete_loop(stmt, (cutoff, self.batch_rows), f"delete from {relation}")


def _move_watermark(conn: psycopg.Connection, table: str, time_column: str, cutoff: datetime) -> datetime | None:
    """Freeze [oldest row before the cutoff, cutoff) for the rollups; nothing when no row
    is older than the cutoff. Returns that oldest row's time (None: nothing to remove).
    A NULL `frozen_from` beside a set watermark (set before the column existed) stays
    NULL: its lower end is unknown, so everything before the watermark stays frozen."""
    oldest = sql.SQL("SELECT min({c}) FROM {t} WHERE {c} < %s").format(
        c=sql.Identifier(time_column), t=sql.Identifier(table)
    )

    def move() -> datetime | None:
        with conn.transaction():
            rollups.lock_watermark(conn, table)
            first = scalar(conn, oldest, (cutoff,))
            if first is None:
                return None
            conn.execute(
                """UPDATE store_retention_policies
                   SET frozen_from = CASE WHEN last_cutoff IS NOT NULL AND frozen_from IS NULL THEN NULL
                                          ELSE least(coalesce(frozen_from, %s), %s) END,
                       last_cutoff = greatest(coalesce(last_cutoff, '-infinity'), %s)
                   WHERE table_name = %s""",
                (first, first, cutoff, table),
            )
            return utc(first)

    return retrying(move, f"move retention watermark of {table}")


def _postgres(run: _Run, cutoff: datetime) -> dict:
    conn, table = run.conn, run.table
    made = moved = 0
    if not run.dry_run:
        run.note("premaking partitions")
        made = partitions.premake(conn, table, run.now)
        run.note("sweeping default partition")
        swept = partitions.sweep_default(conn, table, not_before=cutoff, check=run.check)
        made += swept["partitions_created"]
        moved = swept["rows_moved"]
        # Partitions detached by an earlier run that stopped before dropping them.
        for name in partitions.retired_tables(conn, table):
            run.rows_removed += run.count(name)
            conn.execute(sql.SQL("DROP TABLE IF EXISTS {}").format(sql.Identifier(name)))
            run.dropped.append(name)
    straddling: list[partitions.Partition] = []
    whole: list[str] = []
    for part in partitions.list_partitions(conn, table):
        if part.hi <= cutoff:
            whole.append(part.name)
        elif part.lo < cutoff:
            straddling.append(part)
    if run.dry_run:
        for name in whole:
            run.check()
            run.rows_removed += run.count(name)
            run.dropped.append(name)
    elif whole:
        run.note("dropping partitions")
        for i in range(0, len(whole), partitions.GROUP):
            run.check()
            names_dropped, rows = partitions.drop(conn, table, whole[i : i + partitions.GROUP])
            run.rows_removed += rows
            run.dropped.extend(names_dropped)
    names = [p.name for p in straddling]
    default = partitions.default_partition(conn, table)
    if default:
        names.append(default)
    if straddling and not run.dry_run:
        run.note("trimming the partition straddling the cutoff")
    for part in straddling:
        # A partition mostly older than the cutoff keeps its few newer rows instead
        # (partitions.trim): copying them costs less than deleting the rest.
        if not run.dry_run and (removed := partitions.trim(conn, table, part, cutoff)) is not None:
            run.rows_removed += removed
            names.remove(part.name)
    for name in names:
        if run.dry_run:
            run.rows_removed += run.count(name, cutoff)
        else:
            run.delete_batches(name, cutoff)
    return {"partitions_created": made, "rows_moved_from_default": moved}


def _timescaledb(run: _Run, cutoff: datetime) -> dict:
    conn, table = run.conn, run.table
    chunks = conn.execute(
        """SELECT chunk_schema, chunk_name, range_start, range_end, is_compressed
           FROM timescaledb_information.chunks
           WHERE hypertable_schema = current_schema() AND hypertable_name = %s AND range_start < %s
           ORDER BY range_start""",
        (table, cutoff),
    ).fetchall()
    whole = [(f"{schema}.{name}", lo, hi) for schema, name, lo, hi, _z in chunks if hi <= cutoff]
    if run.dry_run or not whole:
        run.note("counting rows")
        run.rows_removed += partitions.count_many(
            conn, [(schema, name) for schema, name, _lo, hi, _z in chunks if hi <= cutoff]
        )
        run.dropped.extend(name for name, _lo, _hi in whole)
    else:
        run.note("dropping chunks")
        dropped, rows = partitions.drop_chunks(conn, table, cutoff, check=run.check)
        run.rows_removed += rows
        run.dropped.extend(dropped)
    if not run.dry_run and any(hi > cutoff for *_n, hi, _z in chunks):
        run.note("trimming the chunk straddling the cutoff")
    for schema, name, lo, hi, compressed in chunks:
        if hi > cutoff:
            if run.dry_run:
                col = sql.Identifier(run.info.time_column)
                run.rows_removed += scalar(
                    conn,
                    sql.SQL("SELECT count(*) FROM {} WHERE {} >= %s AND {} < %s").format(
                        sql.Identifier(table), col, col
                    ),
                    (lo, cutoff),
                )
            elif (
                removed := partitions.trim_chunk(
                    conn, table, partitions.Partition(name, utc(lo), utc(hi), schema), cutoff
                )
            ) is not None:
                # mostly older than the cutoff: its newer rows were kept in a new chunk instead
                run.rows_removed += removed
            else:
                # A compressed chunk is decompressed first (the compression policy compresses it
                # again later): deleting part of it in place would decompress the whole chunk
                # inside the DELETE, past timescaledb.max_tuples_decompressed_per_dml_transaction
                # for a chunk of more than 100,000 rows, and row batches by ctid need a plain heap.
                # The compression policy may compress it meanwhile: then its old rows are not in
                # the heap the batches read, and the chunk is decompressed (again) until none is left.
                col = sql.Identifier(run.info.time_column)
                left = sql.SQL("SELECT EXISTS (SELECT FROM {t} WHERE {c} < %s AND {c} >= %s)").format(
                    t=sql.Identifier(table), c=col
                )
                query = "SELECT decompress_chunk(%s::regclass, if_compressed => true)"
                chunk = sql.Identifier(schema, name).as_string(conn)
                for attempt in range(3):
                    if compressed or attempt:
                        run.note("decompressing the chunk straddling the cutoff")
                        retrying(partial(conn.execute, query, (chunk,)), f"decompress {name}", check=run.check)
                    run.delete_batches(name, cutoff, schema=schema)
                    if not scalar(conn, left, (cutoff, lo)):
                        break
    return {}


def apply_table(
    conn: psycopg.Connection,
    table: str,
    *,
    dry_run: bool = False,
    check: Check | None = None,
    progress: Callable[..., None] | None = None,
    batch_rows: int = BATCH_ROWS,
    now: datetime | None = None,
) -> dict:
    """Apply `table`'s policy now. `conn` must be an autocommit connection.

    `now` (default: the database's now()) is the time the cutoff and the premade
    partitions are reckoned from; tests pass a fixed one so no outcome depends on the date.

    Returns cutoff, rows removed (or that would be), partitions/chunks dropped.
    A table whose policy is disabled, or that another retention run is working on,
    is skipped (`skipped` says why); plain-Postgres partition upkeep (premake, DEFAULT
    sweep) still runs for a disabled policy.
    """
    if not conn.autocommit:
        raise ValueError("apply_table needs an autocommit connection")
    policy = get_policy(conn, table)
    if policy is None:
        raise ValueError(f"no retention policy for {table}")
    use = backend.table_backend(conn, table)
    got = scalar(conn, "SELECT pg_try_advisory_lock(%s, %s::regclass::oid::int)", (RUN_LOCK, table))
    if not got:
        return {"table": table, "skipped": "another retention run is working on this table"}
    try:
        if not policy["enabled"]:
            out = {"table": table, "backend": use, "skipped": "policy disabled", "retain": policy["retain"]}
            if use == backend.POSTGRES and not dry_run:  # partition upkeep still runs
                made = partitions.premake(conn, table, now)
                swept = partitions.sweep_default(conn, table, check=check)
                out.update(
                    partitions_created=made + swept["partitions_created"], rows_moved_from_default=swept["rows_moved"]
                )
            return out
        retain = timedelta(seconds=policy["retain_seconds"])
        if now is None:
            cutoff = utc(scalar(conn, "SELECT now() - %s::interval", (retain,)))
        else:
            cutoff = utc(now) - retain
        run = _Run(conn, table, dry_run, check, progress, batch_rows, now)
        if not dry_run:
            run.note("freezing rollups before the cutoff")
            _move_watermark(conn, table, run.info.time_column, cutoff)
        extra = (_postgres if use == backend.POSTGRES else _timescaledb)(run, cutoff)
        result = {
            "table": table,
            "backend": use,
            "dry_run": dry_run,
            "retain": policy["retain"],
            "cutoff": cutoff.isoformat(),
            "rows_removed": run.rows_removed,
            "dropped": len(run.dropped),
            "dropped_names": run.dropped,
            **extra,
        }
        if not dry_run:
            conn.execute(
                "UPDATE store_retention_policies SET last_applied_at = now(), last_result = %s WHERE table_name = %s",
                (Jsonb(result), table),
            )
        return result
    finally:
        conn.execute("SELECT pg_advisory_unlock(%s, %s::regclass::oid::int)", (RUN_LOCK, table))

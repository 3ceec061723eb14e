"""The write path of a backfill: COPY straight into the table where it can, else COPY into a
staging table and a set-based merge.

Per batch, one transaction:

1. Where the batch can go straight in (`Loader.direct`): on plain Postgres when all its
   rows fall in one range partition, on TimescaleDB always. Then the batch is `COPY`ed
   into that partition (or the hypertable) inside a savepoint. COPY into a partition
   inserts rows in multi-row groups; COPY into the partitioned parent cannot, because
   the parent's statement triggers with transition tables (the rollup invalidations,
   migration 0005) force Postgres to insert row by row. A partition named directly
   fires none of the parent's statement triggers, so the loader records the rollup
   invalidations itself, exactly as the trigger would (one row per aggregate and
   distinct bucket of the batch's times). The parent is locked in ROW EXCLUSIVE mode
   first, as an INSERT into it would, so retention cannot drop or trim the partition
   between the lookup and the COPY. If any key already exists, or repeats within the
   batch, the unique index refuses it (`unique_violation`), the savepoint rolls back and
   the batch takes the staging path's upsert.
2. Otherwise `COPY` the batch's CSV into `pg_temp.backfill_staging` (a temporary table:
   no WAL, emptied at commit), then merge into the target. First the cheap way: a plain
   `INSERT ... SELECT`, inside a savepoint. It succeeds when every key of the batch is
   new, which is the common case of loading history (and it costs about half of `ON
   CONFLICT`, which must insert speculatively row by row). If any key already exists, or
   repeats within the batch, the savepoint rolls back; then the upsert runs:
   `INSERT ... SELECT DISTINCT ON (key) ... ORDER BY key, line DESC ON CONFLICT DO
   UPDATE ... WHERE values differ`: the last line of the file wins (`line` numbers the
   staged rows in file order), rows already identical are left alone (no dead tuples,
   no touched `updated_at`). After such a batch the next few go straight to the upsert.
3. Whatever the caller adds (the checkpoint, the job_runs counts), then COMMIT.

Rows arrive in the table's column order as tuples of Postgres' binary COPY format
(app/backfill/rows.py), the same bytes for both paths.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass

import psycopg
from psycopg import sql

from app.backfill.rows import COPY_HEADER, COPY_TRAILER, Batch, epoch_to_datetime
from app.timeseries import backend, partitions

COLUMNS = ("provider", "symbol", "interval", "ts", "open", "high", "low", "close", "volume")
KEY = COLUMNS[:4]
VALUES = COLUMNS[4:]
STAGING = "backfill_staging"
UPSERT_AFTER_CONFLICT = 4  # batches that skip the plain INSERT after one conflicted
# Errors that mean "not straight into this table" for good (a role without INSERT on the
# partitions, row-level security): from then on the staging path.
_NO_DIRECT = (psycopg.errors.InsufficientPrivilege, psycopg.errors.FeatureNotSupported)

_STAGING_DDL = """
CREATE TEMP TABLE IF NOT EXISTS backfill_staging (
    line bigint GENERATED ALWAYS AS IDENTITY, provider text NOT NULL, symbol text NOT NULL,
    "interval" text NOT NULL, ts timestamptz NOT NULL, open double precision, high double precision,
    low double precision, close double precision, volume double precision
) ON COMMIT DELETE ROWS
"""
_COPY = (
    'COPY pg_temp.backfill_staging (provider, symbol, "interval", ts, open, high, low, close, volume) '
    "FROM STDIN (FORMAT binary)"
)
# What the rollup trigger of migration 0005 records for inserted rows, for rows COPYed
# into a partition directly (which fires no trigger of the parent).
_INVALIDATE = """
INSERT INTO store_rollup_invalidations (aggregate, bucket)
SELECT DISTINCT a.name, date_bin(a.bucket_width, t.ts, timestamptz '1970-01-01 00:00:00+00')
FROM (SELECT timestamptz '2000-01-01 00:00:00+00' + us * interval '1 microsecond' AS ts
      FROM unnest(%s::bigint[]) AS us) t
CROSS JOIN store_aggregates a
WHERE a.source = %s AND isfinite(t.ts)
"""


@dataclass(frozen=True)
class Direct:
    """Where a batch can be COPYed straight in."""

    table: str  # a partition of the table, or the table itself (TimescaleDB)
    invalidate: bool  # record the rollup invalidations (a partition: no trigger fires)


def _write(copy: psycopg.Copy, chunks: list[bytes]) -> None:
    """One binary COPY's data: the header, the chunks of tuples, the trailer."""
    copy.write(COPY_HEADER)
    for chunk in chunks:
        copy.write(chunk)
    copy.write(COPY_TRAILER)


def _ids(names: Iterable[str]) -> sql.Composable:
    return sql.SQL(", ").join(sql.Identifier(n) for n in names)


def _select(prefix: str) -> sql.Composable:
    """The staging columns in target order."""
    return sql.SQL(", ").join(sql.SQL("{}.{}").format(sql.Identifier(prefix), sql.Identifier(c)) for c in COLUMNS)


def insert_sql(table: str) -> sql.Composed:
    """The plain INSERT, in key order (like the upsert): concurrent loads of overlapping
    keys then lock rows in one order and rarely deadlock."""
    key = sql.SQL(", ").join(sql.SQL("s.{}").format(sql.Identifier(c)) for c in KEY)
    return sql.SQL("INSERT INTO {t} ({cols}) SELECT {sel} FROM pg_temp.backfill_staging s ORDER BY {key}").format(
        t=sql.Identifier(table), cols=_ids(COLUMNS), sel=_select("s"), key=key
    )


def upsert_sql(table: str) -> sql.Composed:
    key = sql.SQL(", ").join(sql.SQL("s.{}").format(sql.Identifier(c)) for c in KEY)
    return sql.SQL(
        "INSERT INTO {t} AS t ({cols}) "
        "SELECT DISTINCT ON ({key}) {sel} FROM pg_temp.backfill_staging s ORDER BY {key}, s.line DESC "
        "ON CONFLICT ({keycols}) DO UPDATE SET {sets} "
        "WHERE ({old}) IS DISTINCT FROM ({new})"
    ).format(
        t=sql.Identifier(table),
        cols=_ids(COLUMNS),
        key=key,
        sel=_select("s"),
        keycols=_ids(KEY),
        sets=sql.SQL(", ").join(sql.SQL("{c} = EXCLUDED.{c}").format(c=sql.Identifier(c)) for c in VALUES),
        old=sql.SQL(", ").join(sql.SQL("t.{}").format(sql.Identifier(c)) for c in VALUES),
        new=sql.SQL(", ").join(sql.SQL("EXCLUDED.{}").format(sql.Identifier(c)) for c in VALUES),
    )


class MergePolicy:
    """Whether the next merge tries the plain INSERT first (shared by a job's connections;
    merges run one at a time)."""

    def __init__(self) -> None:
        self._upsert_only = 0
        self.upserts = 0  # batches that needed the upsert
        self.direct = True  # False once a COPY straight into the table was refused for good
        self.direct_batches = 0  # batches COPYed straight into the table

    def try_insert(self) -> bool:
        if self._upsert_only > 0:
            self._upsert_only -= 1
            return False
        return True

    def conflicted(self) -> None:
        self._upsert_only = UPSERT_AFTER_CONFLICT


class Loader:
    """Writes batches into `table`, straight in or through this session's staging table.

    `write` does a whole batch in one transaction; `direct`, `copy` and `merge` are its
    steps for callers that run them inside their own transaction.
    """

    def __init__(self, conn: psycopg.Connection, table: str = "bars_ohlcv", policy: MergePolicy | None = None):
        if not conn.autocommit:
            raise ValueError("the loader needs an autocommit connection")
        self.conn = conn
        self.table = table
        self.policy = policy or MergePolicy()
        self._insert = insert_sql(table)
        self._upsert = upsert_sql(table)
        self._partitioned = bool(
            conn.execute("SELECT 1 FROM pg_partitioned_table WHERE partrelid = %s::regclass", (table,)).fetchone()
        )
        self._hypertable = not self._partitioned and backend.is_hypertable(conn, table)
        # Session settings before the first use of a temp table: room for a batch in
        # memory (temp_buffers) and for the upsert's sort (work_mem).
        conn.execute("SET temp_buffers = '64MB'")
        conn.execute("SET work_mem = '64MB'")
        # A batch's COMMIT does not wait for its WAL to reach the disk. A crash can then
        # lose the last batches, but only whole, each with its checkpoint (they commit
        # together), so the resumed load re-reads exactly them. Before it vacuums what it
        # wrote, the job commits once with synchronous_commit = on on its own session
        # (app/timeseries/vacuum.flush_wal), which flushes the WAL of every batch before it.
        conn.execute("SET synchronous_commit = off")
        conn.execute(_STAGING_DDL)

    def write(self, batch: Batch, then: Callable[[psycopg.Connection, int], None] | None = None) -> int:
        """The batch in one transaction (with `then(conn, written)`); the rows inserted or
        changed."""
        with self.conn.transaction():
            direct = self.direct(batch)
            if direct is None:
                self.copy(batch.chunks)
            written = self.merge(batch, direct) if batch.rows else 0
            if then is not None:
                then(self.conn, written)
        return written

    def direct(self, batch: Batch) -> Direct | None:
        """Where the batch can be COPYed straight in (inside the caller's transaction), or
        None. On a partitioned table this locks the parent as an INSERT would."""
        if not batch.rows or not self.policy.direct:
            return None
        if self._hypertable:
            return Direct(self.table, invalidate=False)
        if not self._partitioned:
            return None
        self.conn.execute(sql.SQL("LOCK TABLE {} IN ROW EXCLUSIVE MODE").format(sql.Identifier(self.table)))
        lo, hi = epoch_to_datetime(batch.min_epoch), epoch_to_datetime(batch.max_epoch)
        name = partitions.holding(self.conn, self.table, lo, hi)
        return Direct(name, invalidate=True) if name is not None else None

    def copy(self, chunks: list[bytes]) -> None:
        """COPY CSV chunks into the staging table (inside the caller's transaction)."""
        if not chunks:
            return
        with self.conn.cursor() as cur, cur.copy(_COPY) as copy:
            _write(copy, chunks)

    def merge(self, batch: Batch, direct: Direct | None = None) -> int:
        """The batch into the target (inside the caller's transaction): straight in when
        `direct` says where, else from the staging table (which `copy` filled); rows
        inserted or changed."""
        insert = self.policy.try_insert()
        if direct is not None:
            if insert:
                try:
                    with self.conn.transaction():
                        return self._copy_direct(batch, direct)
                except psycopg.errors.UniqueViolation:
                    self.policy.conflicted()
                    insert = False
                except _NO_DIRECT:
                    self.policy.direct = False
            self.copy(batch.chunks)
        with self.conn.cursor() as cur:
            if insert:
                try:
                    with self.conn.transaction():
                        return cur.execute(self._insert).rowcount
                except psycopg.errors.UniqueViolation:
                    self.policy.conflicted()
            self.policy.upserts += 1
            return cur.execute(self._upsert).rowcount

    def _copy_direct(self, batch: Batch, direct: Direct) -> int:
        statement = sql.SQL("COPY {} ({}) FROM STDIN (FORMAT binary)").format(
            sql.Identifier(direct.table), _ids(COLUMNS)
        )
        with self.conn.cursor() as cur:
            with cur.copy(statement) as copy:
                _write(copy, batch.chunks)
            written = cur.rowcount
            if direct.invalidate:
                cur.execute(_INVALIDATE, (sorted(batch.stamps), self.table))
        self.policy.direct_batches += 1
        return written

"""The write path of a backfill: COPY into a staging table, then a set-based merge.

Per batch, one transaction:

1. `COPY` the batch's CSV into `pg_temp.backfill_staging` (a temporary table: no WAL,
   emptied at commit).
2. Merge into the target. First the cheap way: a plain `INSERT ... SELECT`, inside a
   savepoint. It succeeds when every key of the batch is new, which is the common case
   of loading history (and it costs about half of `ON CONFLICT`, which must insert
   speculatively row by row). If any key already exists, or repeats within the batch,
   the unique index refuses it (`unique_violation`; nothing is half-written) and the
   savepoint rolls back; then the upsert runs:
   `INSERT ... SELECT DISTINCT ON (key) ... ORDER BY key, line DESC ON CONFLICT DO
   UPDATE ... WHERE values differ`: the last line of the file wins, rows already
   identical are left alone (no dead tuples, no touched `updated_at`). After such a
   batch the next few go straight to the upsert.
3. Whatever the caller adds (the checkpoint, the job_runs counts), then COMMIT.

Time arrives as epoch seconds (double) and becomes timestamptz through `to_timestamp`.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable

import psycopg
from psycopg import sql

COLUMNS = ("provider", "symbol", "interval", "ts", "open", "high", "low", "close", "volume")
KEY = COLUMNS[:4]
VALUES = COLUMNS[4:]
STAGING = "backfill_staging"
UPSERT_AFTER_CONFLICT = 4  # batches that skip the plain INSERT after one conflicted

_STAGING_DDL = """
CREATE TEMP TABLE IF NOT EXISTS backfill_staging (
    line bigint NOT NULL, provider text NOT NULL, symbol text NOT NULL, "interval" text NOT NULL,
    ts double precision NOT NULL, open double precision, high double precision, low double precision,
    close double precision, volume double precision
) ON COMMIT DELETE ROWS
"""
_COPY = (
    'COPY pg_temp.backfill_staging (line, provider, symbol, "interval", ts, open, high, low, close, volume) '
    "FROM STDIN (FORMAT csv, NULL 'null')"
)


def _ids(names: Iterable[str]) -> sql.Composable:
    return sql.SQL(", ").join(sql.Identifier(n) for n in names)


def _select(prefix: str) -> sql.Composable:
    """The staging columns in target order, time converted."""
    parts = [
        sql.SQL("to_timestamp({}.ts)").format(sql.Identifier(prefix))
        if c == "ts"
        else sql.SQL("{}.{}").format(sql.Identifier(prefix), sql.Identifier(c))
        for c in COLUMNS
    ]
    return sql.SQL(", ").join(parts)


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

    def try_insert(self) -> bool:
        if self._upsert_only > 0:
            self._upsert_only -= 1
            return False
        return True

    def conflicted(self) -> None:
        self._upsert_only = UPSERT_AFTER_CONFLICT


class Loader:
    """Writes batches into `table` through this session's staging table.

    `write` does a whole batch in one transaction; `copy` and `merge` are its two steps
    for callers that run them inside their own transaction.
    """

    def __init__(self, conn: psycopg.Connection, table: str = "bars_ohlcv", policy: MergePolicy | None = None):
        if not conn.autocommit:
            raise ValueError("the loader needs an autocommit connection")
        self.conn = conn
        self.table = table
        self.policy = policy or MergePolicy()
        self._insert = insert_sql(table)
        self._upsert = upsert_sql(table)
        # Session settings before the first use of a temp table: room for a batch in
        # memory (temp_buffers) and for the upsert's sort (work_mem).
        conn.execute("SET temp_buffers = '64MB'")
        conn.execute("SET work_mem = '64MB'")
        conn.execute(_STAGING_DDL)

    def write(self, chunks: list[bytes], then: Callable[[psycopg.Connection, int], None] | None = None) -> int:
        """COPY + merge + `then(conn, written)` in one transaction; returns the rows
        inserted or changed."""
        with self.conn.transaction():
            self.copy(chunks)
            written = self.merge() if chunks else 0
            if then is not None:
                then(self.conn, written)
        return written

    def copy(self, chunks: list[bytes]) -> None:
        """COPY CSV chunks into the staging table (inside the caller's transaction)."""
        if not chunks:
            return
        with self.conn.cursor() as cur, cur.copy(_COPY) as copy:
            for chunk in chunks:
                copy.write(chunk)

    def merge(self) -> int:
        """Staging -> target (inside the caller's transaction); rows inserted or changed."""
        with self.conn.cursor() as cur:
            if self.policy.try_insert():
                try:
                    with self.conn.transaction():
                        return cur.execute(self._insert).rowcount
                except psycopg.errors.UniqueViolation:
                    self.policy.conflicted()
            self.policy.upserts += 1
            return cur.execute(self._upsert).rowcount

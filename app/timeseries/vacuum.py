"""VACUUM of the partitions (TimescaleDB chunks) a bulk load wrote, so that loaded
history is at rest when the load reports success.

Rows a bulk load writes carry no hint bits, and their pages are not in the visibility
map. Whoever reads them first pays for that, row by row:
- a query;
- the exact count of a retention run, which must then scan the table and mark every row
  instead of counting from an index;
- autovacuum, whose lock a retention run then waits behind.

A VACUUM right after the load does that work once, while the pages are still cached:
about 1.5 s per 4 M rows on the bench machine. bench/history.py counts it in the load's
rows/s. It also gives the planner the new tables' page and row counts at once.

Each table is vacuumed by a statement of its own, with `check()` between them, so a
cancel stops the work between two tables. `SKIP_LOCKED`: a table another session holds
is skipped, not waited for; autovacuum gets to it later. Examples of such a holder:
another load's VACUUM, retention's DDL, autovacuum itself. Nothing here changes a row.
"""

from __future__ import annotations

import bisect
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import datetime

import psycopg
from psycopg import sql

from app.errors import first_line
from app.timeseries.partitions import DAY, existing


@dataclass
class Vacuumed:
    tables: int = 0  # tables vacuumed
    skipped: list[str] = field(default_factory=list)  # "<table>: why", left to autovacuum
    error: str | None = None  # why vacuuming stopped early (the rest left to autovacuum)

    def summary(self) -> dict:
        return {"tables": self.tables, "skipped": self.skipped}

    def warnings(self) -> list[str]:
        if self.error is None:
            return []
        return [
            f"the load is complete, but vacuuming what it wrote stopped early ({self.error}); "
            f"autovacuum will do the rest, until then the first reads of those rows are slower"
        ]


def tables_for(conn: psycopg.Connection, table: str, days: Iterable[datetime]) -> list[sql.Identifier]:
    """The partitions (chunks) of `table` holding any of these days (UTC midnights), in
    range order."""
    ranges = existing(conn, table)
    los = [p.lo for p in ranges]
    picked: set[int] = set()
    for day in days:
        # the last partition starting before the day's end; it holds the day if it ends
        # after the day's start
        i = bisect.bisect_left(los, day + DAY) - 1
        while i >= 0 and ranges[i].hi > day:
            picked.add(i)
            if ranges[i].lo <= day:
                break
            i -= 1
    return [ranges[i].ident for i in sorted(picked)]


def flush_wal(conn: psycopg.Connection) -> None:
    """Make every commit so far durable.

    Until the commit of a row's transaction is flushed, the server may not set the row's
    hint bit, and VACUUM does not mark its page all-visible. A load commits its batches
    asynchronously, and a server may run with synchronous_commit = off.

    A transaction that wrote WAL, committed with `synchronous_commit = on`, flushes the WAL
    up to its commit record, and so every commit before it. An xid alone is not enough: a
    transaction that wrote no WAL commits asynchronously whatever the setting. A temporary
    table's catalog rows are WAL-logged, and it leaves nothing behind."""
    with conn.transaction():
        conn.execute("SET LOCAL synchronous_commit = on")
        conn.execute("CREATE TEMPORARY TABLE store_flush_wal () ON COMMIT DROP")


def vacuum(
    conn: psycopg.Connection,
    tables: list[sql.Identifier],
    check: Callable[[], None],
    progress: Callable[[int, int], None] | None = None,
) -> Vacuumed:
    """`VACUUM (SKIP_LOCKED)` each table, on `conn` (autocommit). A table the server
    skips (held by another session, or not ours to vacuum: its WARNING) is listed in
    `skipped`. A database error other than a stop (which `check` raises) ends the work
    with `error` set: the load it follows is complete either way."""
    done = Vacuumed()
    notices: list[str] = []
    if tables:
        flush_wal(conn)

    def on_notice(diag: psycopg.errors.Diagnostic) -> None:
        if diag.severity_nonlocalized == "WARNING" and diag.message_primary:
            notices.append(diag.message_primary)

    conn.add_notice_handler(on_notice)
    try:
        for n, ident in enumerate(tables):
            check()
            if progress is not None:
                progress(n, len(tables))
            name = ident.as_string(conn)
            notices.clear()
            try:
                conn.execute(sql.SQL("VACUUM (SKIP_LOCKED) {}").format(ident))
            except psycopg.Error as exc:
                check()  # a cancel or timeout that ended the session: report that
                done.error = f"{name}: {first_line(exc, 200)}"
                break
            if notices:
                done.skipped.append(f"{name}: {notices[0]}")
            else:
                done.tables += 1
        else:
            if progress is not None:
                progress(len(tables), len(tables))
    finally:
        conn.remove_notice_handler(on_notice)
    return done

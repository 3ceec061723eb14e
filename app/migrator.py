"""Schema migrations with yoyo: what is on disk, what is applied, and applying it safely.

Safety:
- One store migrator at a time: a session-level advisory lock (MIGRATE_LOCK_KEY) is held
  on a connection of our own for the whole run. yoyo's `_yoyo_lock` row has no expiry, so
  a killed migrator leaves it behind; whoever holds the advisory lock knows any such row
  is stale (its holder would hold the advisory lock) and breaks it.
- DDL runs with `lock_timeout` and `statement_timeout` (settings), so it fails fast
  instead of queueing behind ingest and blocking it.
- yoyo applies a migration in one transaction and records it in a second one, so a
  killed run leaves the schema as before that migration, or applied but unrecorded:
  migrations are written idempotently (IF NOT EXISTS) and a re-run applies cleanly.
"""

from __future__ import annotations

import getpass
import os
from functools import lru_cache
from typing import Any
from urllib.parse import parse_qsl, quote, urlencode, urlsplit, urlunsplit

import psycopg
from yoyo import get_backend, read_migrations

from app import logs, retry
from app.config import PROJECT_ROOT, Settings
from app.db import scalar

MIGRATIONS_DIR = PROJECT_ROOT / "migrations"
MIGRATION_TABLE = "_yoyo_migration"
MIGRATE_LOCK_KEY = 0x4D44_5353_4D49  # 'MDSSMI'


class MigrationBusy(Exception):
    """Another store migrator holds the lock."""


@lru_cache(maxsize=1)
def disk_ids() -> tuple[str, ...]:
    """Migration ids on disk, in apply order (read once per process)."""
    return tuple(m.id for m in read_migrations(str(MIGRATIONS_DIR)))


def applied_ids(conn: psycopg.Connection) -> list[str]:
    """Ids yoyo recorded as applied ([] on a database yoyo never touched)."""
    exists = scalar(conn, "SELECT to_regclass(%s) IS NOT NULL", (MIGRATION_TABLE,))
    if not exists:
        return []
    return [r[0] for r in conn.execute(f"SELECT migration_id FROM {MIGRATION_TABLE}").fetchall()]


def applied_count(conn: psycopg.Connection) -> int:
    """Apply operations in yoyo's log (0 before the first migration): every migration
    applied to this database, by any process, over its whole life."""
    if not scalar(conn, "SELECT to_regclass('_yoyo_log') IS NOT NULL"):
        return 0
    return int(scalar(conn, "SELECT count(*) FROM _yoyo_log WHERE operation = 'apply'"))


def status(conn: psycopg.Connection) -> dict:
    """`{"version", "applied", "pending"}` as served by GET /schema/version."""
    applied = set(applied_ids(conn))
    ordered = [m for m in disk_ids() if m in applied]
    return {
        "version": ordered[-1] if ordered else "uninitialized",
        "applied": len(applied),
        "pending": [m for m in disk_ids() if m not in applied],
    }


def yoyo_url(settings: Settings, session_name: str) -> str:
    """yoyo opens a fresh connection per migration from its URL: carry the timeouts in it."""
    parts = urlsplit(settings.yoyo_url)
    args = dict(parse_qsl(parts.query))
    args["application_name"] = session_name
    args["options"] = (
        f"-c lock_timeout={int(settings.lock_timeout_ms)} "
        f"-c statement_timeout={int(settings.statement_timeout_ms)} -c TimeZone=UTC "
        "-c app.maintenance=on"  # migrations see every tenant's rows (migration 0015)
    )
    return urlunsplit(parts._replace(query=urlencode(args, quote_via=quote)))


def _ensure_login_name() -> None:
    """yoyo logs the OS user name (getpass.getuser), which fails for a uid without a passwd
    entry (containers run with an arbitrary --user). Give it a name instead of failing."""
    try:
        getpass.getuser()
    except (KeyError, OSError):
        os.environ["LOGNAME"] = "market-data-store"


def apply(settings: Settings, dry_run: bool = False, session_name: str = "store-migrate", wait_s: float = 30.0) -> dict:
    """Apply pending migrations (or list them with dry_run). Returns the job result."""
    log = logs.get("migrate")
    _ensure_login_name()
    with psycopg.connect(settings.database_url, autocommit=True, application_name=session_name) as guard:

        def lock() -> None:
            if not scalar(guard, "SELECT pg_try_advisory_lock(%s)", (MIGRATE_LOCK_KEY,)):
                raise MigrationBusy(f"another migration held the lock for more than {wait_s:g} s")

        retry.call(lock, on=MigrationBusy, within=wait_s, first_pause=0.5, max_pause=0.5)
        backend = get_backend(yoyo_url(settings, session_name), migration_table=MIGRATION_TABLE)
        try:
            migrations = read_migrations(str(MIGRATIONS_DIR))
            pending = [m.id for m in backend.to_apply(migrations)]
            if dry_run:
                return {"dry_run": True, "pending": pending, "applied": []}
            _break_stale_lock(backend, log)
            applied = []
            with backend.lock(timeout=10):
                todo = backend.to_apply(migrations)
                for migration in todo:
                    log.info("applying migration", migration=migration.id)
                    backend.apply_one(migration)
                    applied.append(migration.id)
                backend.run_post_apply(migrations)
            with psycopg.connect(settings.database_url, autocommit=True) as conn:
                version = status(conn)["version"]
            return {"dry_run": False, "applied": applied, "version": version}
        finally:
            backend.connection.close()


def _break_stale_lock(backend: Any, log: Any) -> None:
    """We hold the advisory lock, so any yoyo lock row was left by a dead migrator."""
    try:
        row = backend.execute(f"SELECT pid, ctime FROM {backend.lock_table_quoted}").fetchone()
    except backend.DatabaseError:
        backend.rollback() if backend._in_transaction else None
        return  # no lock table yet
    if row:
        log.warning("breaking stale yoyo lock left by a dead migrator", pid=row[0], since=str(row[1]))
        backend.break_lock()

"""Tools the fault cases share: a migration blocker, a job's database sessions, process probes.

The blocker makes a real job slow without any test-only code path: it creates the
table migration 0002 creates (`job_runs`) in a transaction it keeps open, so the
migration's `CREATE TABLE` waits on that transaction (a real lock wait, visible in
pg_stat_activity) until the blocker rolls back. The service under test runs with a
long `DB_LOCK_TIMEOUT_MS` so the wait is not cut short by the store's own lock timeout.
"""

from __future__ import annotations

from pathlib import Path

import psycopg

from tests.support.common import wait_for

# Service settings for cases that hold the blocker: the DDL waits instead of failing fast.
BLOCKABLE_ENV = {"DB_LOCK_TIMEOUT_MS": "120000"}


class MigrationBlocker:
    """Holds an uncommitted `CREATE TABLE job_runs` so migration 0002 waits on it."""

    def __init__(self, database_url: str):
        self.conn = psycopg.connect(database_url, application_name="fault-blocker")
        self.conn.execute("CREATE TABLE job_runs (held_by_test integer)")

    def release(self) -> None:
        if not self.conn.closed:
            self.conn.rollback()
            self.conn.close()

    def __enter__(self) -> MigrationBlocker:
        return self

    def __exit__(self, *exc) -> None:
        self.release()


def job_sessions(database_url: str, run_id: str, waiting_on_lock: bool = False) -> list[tuple]:
    """The job's database sessions (application_name `store-job:<run_id>`)."""
    with psycopg.connect(database_url, autocommit=True) as conn:
        return conn.execute(
            """SELECT pid, state, wait_event_type, left(query, 120) FROM pg_stat_activity
               WHERE application_name = %s AND (NOT %s OR wait_event_type = 'Lock')""",
            (f"store-job:{run_id}", waiting_on_lock),
        ).fetchall()


def wait_blocked(database_url: str, run_id: str, timeout: float = 30) -> None:
    """Wait until the job's migration is stuck behind the blocker."""
    wait_for(
        lambda: job_sessions(database_url, run_id, waiting_on_lock=True),
        timeout,
        message=f"job {run_id} to wait on the blocker's lock",
    )


def children(pid: int) -> set[int]:
    """Direct children of a process (gunicorn's workers under its master)."""
    out: set[int] = set()
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
        except (FileNotFoundError, ProcessLookupError):
            continue
        if int(fields[1]) == pid and fields[0] != "Z":
            out.add(int(entry.name))
    return out


def alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except FileNotFoundError:
        return False
    return state != "Z"


def applied_migrations(database_url: str) -> list[str]:
    with psycopg.connect(database_url, autocommit=True) as conn:
        if not conn.execute("SELECT to_regclass('_yoyo_migration') IS NOT NULL").fetchone()[0]:
            return []
        return [r[0] for r in conn.execute("SELECT migration_id FROM _yoyo_migration ORDER BY migration_id")]


def table_exists(database_url: str, name: str) -> bool:
    with psycopg.connect(database_url, autocommit=True) as conn:
        return conn.execute("SELECT to_regclass(%s) IS NOT NULL", (name,)).fetchone()[0]


def yoyo_lock_rows(database_url: str) -> int:
    with psycopg.connect(database_url, autocommit=True) as conn:
        if not conn.execute("SELECT to_regclass('yoyo_lock') IS NOT NULL").fetchone()[0]:
            return 0
        return conn.execute("SELECT count(*) FROM yoyo_lock").fetchone()[0]

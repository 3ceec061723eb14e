"""Tools the fault cases share: a throwaway Postgres cluster, a migration blocker, probes.

The blocker makes a real job slow without any test-only code path: it creates the
table migration 0002 creates (`job_runs`) in a transaction it keeps open, so the
migration's `CREATE TABLE` waits on that transaction (a real lock wait, visible in
pg_stat_activity) until the blocker rolls back. The service under test runs with a
long `DB_LOCK_TIMEOUT_MS` so the wait is not cut short by the store's own lock timeout.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from pathlib import Path
from urllib.parse import quote

import psycopg
from conftest import free_port, wait_for

PG_BIN = Path(os.environ.get("PG_BIN", "/usr/lib/postgresql/15/bin"))
# Service settings for cases that hold the blocker: the DDL waits instead of failing fast.
BLOCKABLE_ENV = {"DB_LOCK_TIMEOUT_MS": "120000"}


def _as_postgres(args: list[str]) -> list[str]:
    """pg_ctl and initdb refuse to run as root: run them as the postgres user."""
    return ["runuser", "-u", "postgres", "--", *args] if os.geteuid() == 0 else args


class PgCluster:
    """A throwaway Postgres 15 cluster of the test's own, on 127.0.0.1 and a free port."""

    def __init__(self, host_auth: str = "trust"):
        self.port = free_port()
        self.dir = Path(tempfile.mkdtemp(prefix="mds-pg-"))
        if os.geteuid() == 0:
            shutil.chown(self.dir, "postgres", "postgres")
        self.data = self.dir / "data"
        self.host_auth = host_auth

    def _run(self, *args: str, timeout: float = 60) -> None:
        proc = subprocess.run(_as_postgres([str(a) for a in args]), capture_output=True, text=True, timeout=timeout)
        if proc.returncode != 0:
            raise RuntimeError(f"{args[0]} failed: {proc.stderr.strip() or proc.stdout.strip()}")

    def init(self) -> PgCluster:
        self._run(
            PG_BIN / "initdb",
            "-D",
            self.data,
            "-U",
            "postgres",
            "-E",
            "UTF8",
            "--no-sync",
            "--auth-local=trust",
            f"--auth-host={self.host_auth}",
        )
        return self

    def start(self) -> PgCluster:
        opts = f"-p {self.port} -k {self.dir} -c listen_addresses=127.0.0.1 -c fsync=off -c max_connections=60"
        self._run(
            PG_BIN / "pg_ctl", "-D", self.data, "-l", self.dir / "server.log", "-w", "-t", "30", "-o", opts, "start"
        )
        return self

    def stop(self, mode: str = "fast") -> None:
        self._run(PG_BIN / "pg_ctl", "-D", self.data, "-m", mode, "-w", "-t", "30", "stop")

    def running(self) -> bool:
        return (self.data / "postmaster.pid").exists()

    def destroy(self) -> None:
        if self.running():
            try:
                self.stop("immediate")
            except Exception:  # noqa: BLE001 - best effort at teardown
                pass
        shutil.rmtree(self.dir, ignore_errors=True)

    def admin(self, dbname: str = "postgres") -> psycopg.Connection:
        """A superuser connection over the cluster's Unix socket (trust)."""
        return psycopg.connect(host=str(self.dir), port=self.port, user="postgres", dbname=dbname, autocommit=True)

    def url(self, dbname: str, user: str = "postgres", password: str | None = None) -> str:
        auth = user if password is None else f"{user}:{quote(password, safe='')}"
        return f"postgresql://{auth}@127.0.0.1:{self.port}/{dbname}"


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

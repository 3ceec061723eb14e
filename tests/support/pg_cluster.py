"""A throwaway Postgres 15 cluster of the test's own (initdb in a temporary directory),
on 127.0.0.1 and a free port, that a test may stop, start and destroy."""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from pathlib import Path
from urllib.parse import quote

import psycopg

from tests.support.common import free_port

PG_BIN = Path(os.environ.get("PG_BIN", "/usr/lib/postgresql/15/bin"))


def as_postgres(args: list[str]) -> list[str]:
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
        proc = subprocess.run(as_postgres([str(a) for a in args]), capture_output=True, text=True, timeout=timeout)
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

"""A throwaway Postgres 15 cluster with TimescaleDB preloaded, for tests marked `timescaledb`.

The fixtures built on it (`timescale_cluster`, `timescale_database_url`,
`timescale_migrated_url`) are in tests/conftest.py. Tests skip cleanly when the
extension's library is not installed. The cluster (initdb in a temporary directory owned
by postgres, random port, unix socket in /tmp) is started once per test session and
stopped and deleted at the end; every test gets a fresh database in it.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
import uuid
from pathlib import Path

import psycopg
import pytest

from tests.support.common import free_port, wait_for
from tests.support.pg_cluster import as_postgres

PG_BIN = Path(os.environ.get("TEST_PG_BIN", "/usr/lib/postgresql/15/bin"))
PG_LIB = Path(os.environ.get("TEST_PG_LIB", "/usr/lib/postgresql/15/lib"))
HAVE_TIMESCALEDB = (PG_LIB / "timescaledb.so").exists() and (PG_BIN / "pg_ctl").exists()

requires_timescaledb = pytest.mark.skipif(not HAVE_TIMESCALEDB, reason=f"timescaledb.so not found in {PG_LIB}")


class TimescaleCluster:
    def __init__(self):
        self.dir = Path(tempfile.mkdtemp(prefix="mds-tsdb-"))
        self.data = self.dir / "data"
        self.log = self.dir / "server.log"
        self.port = free_port()
        self.admin_url = f"postgresql://postgres@127.0.0.1:{self.port}/postgres"

    def start(self) -> TimescaleCluster:
        if os.geteuid() == 0:
            shutil.chown(self.dir, "postgres", "postgres")
        subprocess.run(
            as_postgres([str(PG_BIN / "initdb"), "-D", str(self.data), "-U", "postgres", "--auth=trust", "-E", "UTF8"]),
            check=True,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        options = (
            f"-c shared_preload_libraries=timescaledb -c port={self.port} -c listen_addresses=127.0.0.1 "
            "-c unix_socket_directories=/tmp -c timescaledb.telemetry_level=off -c max_connections=60 "
            "-c fsync=off -c synchronous_commit=off"
        )
        subprocess.run(
            as_postgres(
                [str(PG_BIN / "pg_ctl"), "-D", str(self.data), "-l", str(self.log), "-w", "-o", options, "start"]
            ),
            check=True,
            stdout=subprocess.DEVNULL,
        )
        wait_for(
            lambda: psycopg.connect(self.admin_url, connect_timeout=2).close() is None,
            20,
            message="the TimescaleDB cluster to accept connections",
        )
        return self

    def stop(self) -> None:
        subprocess.run(
            as_postgres([str(PG_BIN / "pg_ctl"), "-D", str(self.data), "-m", "fast", "stop"]),
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        shutil.rmtree(self.dir, ignore_errors=True)

    def create_database(self) -> tuple[str, str]:
        name = f"mds_ts_{uuid.uuid4().hex[:12]}"
        with psycopg.connect(self.admin_url, autocommit=True) as conn:
            conn.execute(f'CREATE DATABASE "{name}"')
        return name, self.admin_url.rsplit("/", 1)[0] + f"/{name}"

    def drop_database(self, name: str) -> None:
        with psycopg.connect(self.admin_url, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')

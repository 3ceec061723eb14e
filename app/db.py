"""Postgres access: a connection pool for the API process, dedicated connections for jobs.

The API never opens a connection per request: it borrows from the process's `Pool` with
a short timeout and raises `DatabaseUnavailable` when the database cannot be reached (the
HTTP layer answers 503). Jobs get their own connections (`connect`) with `lock_timeout`
and `statement_timeout` set, so DDL and deletes cannot stall ingest or run forever.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import psycopg
from psycopg import sql
from psycopg.abc import Params
from psycopg_pool import ConnectionPool, PoolTimeout

from app.config import Settings

ADMIN_POOL_WAIT_S = 3.0


class DatabaseUnavailable(Exception):
    """No database connection could be had in time; the caller may try again later."""


def connect(
    settings: Settings,
    application_name: str = "market-data-store",
    autocommit: bool = False,
    statement_timeout_ms: int | None = None,
    lock_timeout_ms: int | None = None,
    connect_timeout: int = 5,
    maintenance: bool = False,
) -> psycopg.Connection:
    """Open a dedicated connection with the store's safety timeouts.

    `maintenance`: the session sets `app.maintenance = on`, which (for a role that owns the
    tenant-scoped tables) lets it see and change every tenant's rows despite the forced
    row-level security (migration 0015). Jobs' sessions are maintenance sessions.
    """
    st = settings.statement_timeout_ms if statement_timeout_ms is None else statement_timeout_ms
    lt = settings.lock_timeout_ms if lock_timeout_ms is None else lock_timeout_ms
    return psycopg.connect(
        settings.database_url,
        autocommit=autocommit,
        connect_timeout=connect_timeout,
        application_name=application_name,
        options=f"-c statement_timeout={st} -c lock_timeout={lt} -c TimeZone=UTC"
        + (" -c app.maintenance=on" if maintenance else ""),
    )


class Pool:
    """The API process's connection pool, opened on first use (after gunicorn forked)."""

    def __init__(self, settings: Settings):
        self.settings = settings
        self._pool: ConnectionPool | None = None
        self._lock = threading.Lock()

    def _get(self) -> ConnectionPool:
        if self._pool is None:
            with self._lock:
                if self._pool is None:
                    p: ConnectionPool = ConnectionPool(
                        self.settings.database_url,
                        min_size=1,
                        max_size=8,
                        # admin requests wait this long for a connection before a 503; probes
                        # and /metrics pass their own, shorter, timeout
                        timeout=ADMIN_POOL_WAIT_S,
                        open=False,
                        check=ConnectionPool.check_connection,
                        reconnect_timeout=0,  # keep trying forever: the database may come back
                        kwargs={
                            "autocommit": True,
                            "connect_timeout": 2,
                            "application_name": "market-data-store-api",
                            "options": "-c statement_timeout=5000 -c lock_timeout=2000 -c TimeZone=UTC",
                        },
                        name="api",
                    )
                    p.open(wait=False)
                    self._pool = p
        return self._pool

    @contextmanager
    def connection(self, timeout: float | None = None) -> Iterator[psycopg.Connection]:
        """Borrow a pooled autocommit connection; DatabaseUnavailable if none can be had in time."""
        try:
            with self._get().connection(timeout=timeout) as conn:
                yield conn
        except PoolTimeout:
            raise DatabaseUnavailable("database unavailable, try again later") from None
        except psycopg.OperationalError as exc:
            raise DatabaseUnavailable("database unavailable, try again later") from exc

    def close(self) -> None:
        with self._lock:
            if self._pool is not None:
                self._pool.close(timeout=2)
                self._pool = None


def scalar(conn: psycopg.Connection, query: str | bytes | sql.SQL | sql.Composed, params: Params | None = None) -> Any:
    """The first value of the first row of a query that always returns a row
    (`SELECT count(*)`, `... RETURNING` of an insert, a function call)."""
    row = conn.execute(query, params).fetchone()
    if row is None:
        raise LookupError("the query returned no row")
    return row[0]

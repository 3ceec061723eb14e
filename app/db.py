"""Postgres access: one connection pool per API process, dedicated connections for jobs.

The API never opens a connection per request: it borrows from the pool with a short
timeout and turns an unreachable database into a 503 (see `errors.Unavailable`).
Jobs get their own connections with `lock_timeout` and `statement_timeout` set, so DDL
and deletes cannot stall ingest or run forever.
"""

from __future__ import annotations

import threading
from contextlib import contextmanager

import psycopg
from psycopg_pool import ConnectionPool, PoolTimeout

from app.config import Settings
from app.errors import Unavailable

_pool: ConnectionPool | None = None
_pool_lock = threading.Lock()


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


def pool(settings: Settings) -> ConnectionPool:
    """The process-wide pool (created on first use, after gunicorn forked)."""
    global _pool
    if _pool is None:
        with _pool_lock:
            if _pool is None:
                p = ConnectionPool(
                    settings.database_url,
                    min_size=1,
                    max_size=8,
                    timeout=settings.health_timeout,
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
                _pool = p
    return _pool


@contextmanager
def connection(settings: Settings, timeout: float | None = None):
    """Borrow a pooled autocommit connection; raise Unavailable if none can be had in time."""
    try:
        with pool(settings).connection(timeout=timeout) as conn:
            yield conn
    except PoolTimeout:
        raise Unavailable("database unavailable, try again later") from None
    except psycopg.OperationalError as exc:
        raise Unavailable("database unavailable, try again later") from exc


def close_pool() -> None:
    global _pool
    if _pool is not None:
        _pool.close(timeout=2)
        _pool = None

"""Retrying short transactions that lost a lock race (lock_timeout) or a deadlock.

Partition DDL, retention and refresh take locks with the session's `lock_timeout`, so
they give way to ingest instead of queueing in front of it; this helper tries again
with a growing, jittered pause.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TypeVar

import psycopg

from app import logs, retry
from app.db import scalar

T = TypeVar("T")
DDL_LOCK_TIMEOUT_MS = 1000  # cap for locks that make ingest queue behind us (ACCESS EXCLUSIVE)
RETRYABLE = (psycopg.errors.LockNotAvailable, psycopg.errors.DeadlockDetected, psycopg.errors.SerializationFailure)
ATTEMPTS = 8


def retrying(fn: Callable[[], T], what: str, attempts: int = ATTEMPTS, check: Callable[[], None] | None = None) -> T:
    """Call `fn` (one whole transaction) until it gets its locks; re-raise after `attempts`.
    `check` runs before each pause (a cancelled job stops instead of waiting)."""

    def before_pause(attempt: int, exc: BaseException, pause: float) -> None:
        logs.get("timeseries").info(
            "lock not granted, retrying", what=what, attempt=attempt, pause_s=round(pause, 2), error=type(exc).__name__
        )
        if check is not None:
            check()

    return retry.call(
        fn, on=RETRYABLE, attempts=attempts, first_pause=0.2, max_pause=5.0, jitter=True, before_pause=before_pause
    )


def short_lock_timeout(conn: psycopg.Connection) -> None:
    """Inside a transaction: cap lock_timeout at DDL_LOCK_TIMEOUT_MS for this transaction.

    While we wait for an ACCESS EXCLUSIVE lock, every new INSERT queues behind our
    request; this bounds that wait (the session's own lock_timeout applies if lower).
    """
    current = int(scalar(conn, "SELECT setting FROM pg_settings WHERE name = 'lock_timeout'"))
    value = DDL_LOCK_TIMEOUT_MS if current == 0 else min(current, DDL_LOCK_TIMEOUT_MS)
    conn.execute("SELECT set_config('lock_timeout', %s, true)", (str(value),))

"""Retrying short transactions that lost a lock race (lock_timeout) or a deadlock.

Partition DDL, retention and refresh take locks with the session's `lock_timeout`, so
they give way to ingest instead of queueing in front of it; this helper tries again
with a growing, jittered pause.
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable
from typing import TypeVar

import psycopg

from app import logs

T = TypeVar("T")
DDL_LOCK_TIMEOUT_MS = 1000  # cap for locks that make ingest queue behind us (ACCESS EXCLUSIVE)
RETRYABLE = (psycopg.errors.LockNotAvailable, psycopg.errors.DeadlockDetected, psycopg.errors.SerializationFailure)
ATTEMPTS = 8


def retrying(fn: Callable[[], T], what: str, attempts: int = ATTEMPTS, check: Callable[[], None] | None = None) -> T:
    """Call `fn` (one whole transaction) until it gets its locks; re-raise after `attempts`."""
    for attempt in range(1, attempts + 1):
        try:
            return fn()
        except RETRYABLE as exc:
            if attempt == attempts:
                raise
            pause = min(0.1 * 2**attempt, 5.0) * random.uniform(0.5, 1.0)
            logs.get("timeseries").info(
                "lock not granted, retrying",
                what=what,
                attempt=attempt,
                pause_s=round(pause, 2),
                error=type(exc).__name__,
            )
            if check is not None:
                check()
            time.sleep(pause)
    raise AssertionError("unreachable")


def short_lock_timeout(conn: psycopg.Connection) -> None:
    """Inside a transaction: cap lock_timeout at DDL_LOCK_TIMEOUT_MS for this transaction.

    While we wait for an ACCESS EXCLUSIVE lock, every new INSERT queues behind our
    request; this bounds that wait (the session's own lock_timeout applies if lower).
    """
    current = int(conn.execute("SELECT setting FROM pg_settings WHERE name = 'lock_timeout'").fetchone()[0])
    value = DDL_LOCK_TIMEOUT_MS if current == 0 else min(current, DDL_LOCK_TIMEOUT_MS)
    conn.execute("SELECT set_config('lock_timeout', %s, true)", (str(value),))

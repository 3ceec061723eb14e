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

T = TypeVar("T")
DDL_LOCK_TIMEOUT_MS = 1000  # cap for locks that make ingest queue behind us (ACCESS EXCLUSIVE)
# ...but always this much longer than deadlock_timeout: only when a lock request has waited
# deadlock_timeout does the server cancel an autovacuum that holds the lock (as it does on
# freshly loaded partitions and chunks); giving up at the same moment would let it win.
AUTOVACUUM_GRACE_MS = 500
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
    request; this bounds that wait (the session's own lock_timeout applies if lower). The
    cap stays AUTOVACUUM_GRACE_MS above deadlock_timeout (1.5 s with the default 1 s), so
    an autovacuum holding the lock is cancelled by the server before we give up.
    """
    row = conn.execute(
        """SELECT current_setting('lock_timeout')::interval, current_setting('deadlock_timeout')::interval"""
    ).fetchone()
    assert row is not None
    current, deadlock = (int(v.total_seconds() * 1000) for v in row)
    cap = max(DDL_LOCK_TIMEOUT_MS, deadlock + AUTOVACUUM_GRACE_MS)
    value = cap if current == 0 else min(current, cap)
    conn.execute("SELECT set_config('lock_timeout', %s, true)", (str(value),))

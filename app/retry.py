"""The one way this code tries something again: tenacity, with bounded or endless attempts,
exponentially growing pauses (optionally jittered) and a hook before each pause.

Used for lock races in the database (app/timeseries/retry.py), the schema registry's
transient failures (app/drift/registry.py), a broken ledger connection of the runner,
the worker waiting for Postgres and Redis at start, and a migration waiting for the
migrator's lock.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TypeVar

from tenacity import (
    RetryCallState,
    Retrying,
    retry_if_exception_type,
    stop_after_attempt,
    stop_after_delay,
    stop_never,
    wait_exponential,
    wait_none,
    wait_random_exponential,
)
from tenacity.stop import stop_base
from tenacity.wait import wait_base

T = TypeVar("T")

# before_pause(attempt that failed (1-based), its exception, seconds until the next one)
BeforePause = Callable[[int, BaseException, float], None]


def call(
    fn: Callable[[], T],
    *,
    on: type[BaseException] | tuple[type[BaseException], ...],
    attempts: int | None = None,
    within: float | None = None,
    first_pause: float = 0.0,
    max_pause: float = 10.0,
    jitter: bool = False,
    before_pause: BeforePause | None = None,
) -> T:
    """Call `fn` until it returns, retrying when it raises one of `on`.

    `attempts`: how many calls at most; `within`: seconds after which no new call starts
    (both None: until it succeeds). After the last call, its exception propagates unchanged. Pauses start at `first_pause` and double up to
    `max_pause`; with `jitter`, each is drawn at random below that bound (spreads out
    sessions that collided). `before_pause` runs before each pause and may raise to stop.
    """
    wait: wait_base
    if first_pause <= 0:
        wait = wait_none()
    elif jitter:
        wait = wait_random_exponential(multiplier=first_pause, max=max_pause)
    else:
        wait = wait_exponential(multiplier=first_pause, max=max_pause)

    def hook(state: RetryCallState) -> None:
        if before_pause is not None and state.outcome is not None:
            exc = state.outcome.exception()
            if exc is not None:
                before_pause(state.attempt_number, exc, state.upcoming_sleep)

    stop: stop_base = stop_never
    if attempts is not None:
        stop = stop_after_attempt(attempts)
    if within is not None:
        stop = stop_after_delay(within) if attempts is None else stop | stop_after_delay(within)
    retrying = Retrying(
        retry=retry_if_exception_type(on),
        stop=stop,
        wait=wait,
        before_sleep=hook,
        reraise=True,
    )
    return retrying(fn)

"""The one retry primitive (app/retry.py): bounded by attempts or by time, the last error
re-raised unchanged, a hook before each pause that may stop it; and the migrator, which
waits for its lock through it."""

from __future__ import annotations

import psycopg
import pytest

from app import migrator, retry
from tests.support.db import make_settings


class Flaky:
    def __init__(self, failures: int):
        self.failures, self.calls = failures, 0

    def __call__(self) -> str:
        self.calls += 1
        if self.calls <= self.failures:
            raise KeyError(self.calls)
        return "done"


def test_retries_until_success_and_reports_each_pause():
    seen = []
    fn = Flaky(2)
    assert (
        retry.call(fn, on=KeyError, attempts=5, before_pause=lambda n, exc, pause: seen.append((n, exc.args))) == "done"
    )
    assert fn.calls == 3 and seen == [(1, (1,)), (2, (2,))]


def test_gives_up_after_the_attempts_with_the_last_error():
    fn = Flaky(10)
    with pytest.raises(KeyError) as info:
        retry.call(fn, on=KeyError, attempts=3)
    assert fn.calls == 3 and info.value.args == (3,)


def test_other_errors_are_not_retried():
    fn = Flaky(10)
    with pytest.raises(KeyError):
        retry.call(fn, on=ValueError, attempts=5)
    assert fn.calls == 1


def test_the_hook_can_stop_the_retries():
    class Stop(Exception):
        pass

    def stop(n: int, exc: BaseException, pause: float) -> None:
        raise Stop()

    fn = Flaky(10)
    with pytest.raises(Stop):
        retry.call(fn, on=KeyError, attempts=5, before_pause=stop)
    assert fn.calls == 1


def test_bounded_by_time():
    fn = Flaky(10**6)
    with pytest.raises(KeyError):
        retry.call(fn, on=KeyError, within=0.3, first_pause=0.1, max_pause=0.1)
    assert 1 <= fn.calls <= 5  # pauses of 0.1 s for 0.3 s: at most 4 calls (fewer on a busy machine)


def test_a_second_migrator_gives_up_on_the_lock_saying_why(database_url, redis_url):
    settings = make_settings(database_url, redis_url)
    with psycopg.connect(database_url, autocommit=True) as holder:
        holder.execute("SELECT pg_advisory_lock(%s)", (migrator.MIGRATE_LOCK_KEY,))
        with pytest.raises(migrator.MigrationBusy, match=r"another migration held the lock for more than 0.5 s"):
            migrator.apply(settings, wait_s=0.5)

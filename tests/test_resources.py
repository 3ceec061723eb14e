"""Process-wide resources: created by create_app, started only when asked (gunicorn's
post_worker_init), closed at exit; the API's start is where the ledger is bootstrapped."""

from __future__ import annotations

import threading

import psycopg

from app.jobs.reaper import Sweeper
from tests.support.db import make_settings


def test_create_app_opens_and_starts_nothing_then_start_bootstraps_and_sweeps(database_url, redis_url):
    from app import create_app, resources_of

    before = {t.name for t in threading.enumerate()}
    app = create_app(make_settings(database_url, redis_url))
    res = resources_of(app)
    assert res.pool._pool is None  # opened on first use, after gunicorn forked
    assert {t.name for t in threading.enumerate()} - before == set()  # no thread started by create_app
    with psycopg.connect(database_url) as conn:
        assert conn.execute("SELECT to_regclass('store_jobs')").fetchone()[0] is None

    res.start()  # what gunicorn.conf.py's post_worker_init does
    try:
        [sweeper] = [t for t in res.background if isinstance(t, Sweeper)]
        assert sweeper.is_alive() and sweeper.bootstrapped.is_set()
        with psycopg.connect(database_url) as conn:  # the ledger exists before the first request
            assert conn.execute("SELECT to_regclass('store_jobs')").fetchone()[0] is not None
        res.start()  # once only
    finally:
        res.close()
    sweeper.join(timeout=10)
    assert not sweeper.is_alive() and res.pool._pool is None

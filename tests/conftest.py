"""Fixtures only; the helpers behind them live in `tests/support/`.

- Postgres: the machine's server (TEST_PG_ADMIN_URL, default
  postgresql://postgres@127.0.0.1:5432/postgres); every test that asks for a database
  gets a fresh one, dropped afterwards.
- Redis: one throwaway `redis-server` per test session on a free port, flushed per test.
- `service_factory` starts `gunicorn -c gunicorn.conf.py` and `python -m worker` as
  subprocesses, exactly as the container does, and stops them at the end of the test.
- TimescaleDB: one throwaway cluster per session with the extension preloaded; tests
  that ask for it skip where the extension is not installed.

Tests that start processes or clusters (the fixtures in `PROCESS_FIXTURES`) are marked
`slow` here even if their module forgets to, so `pytest -m "not slow"` stays fast.
"""

from __future__ import annotations

import shutil

import psycopg
import pytest
import redis

from tests.support.db import BackgroundDropper, create_database, drop_database, make_settings
from tests.support.redis import RedisServer
from tests.support.service import Service
from tests.support.timescale import HAVE_TIMESCALEDB, PG_LIB, TimescaleCluster

# Fixtures that start real processes (gunicorn, workers, servers, clusters): their tests are `slow`.
PROCESS_FIXTURES = frozenset(
    {"service_factory", "service", "migrated_service", "pg_cluster", "timescale_cluster", "scram_cluster"}
)


def pytest_collection_modifyitems(items):
    for item in items:
        if PROCESS_FIXTURES & set(getattr(item, "fixturenames", ())):
            item.add_marker(pytest.mark.slow)


# -- Postgres --------------------------------------------------------------------------
@pytest.fixture(scope="session")
def database_dropper():
    """Drops the tests' databases in the background (DROP DATABASE forces a checkpoint)."""
    dropper = BackgroundDropper()
    yield dropper
    dropper.close()


@pytest.fixture
def database_url(database_dropper):
    """URL of a fresh, empty database (dropped after the test)."""
    name, url = create_database()
    yield url
    database_dropper.drop(name)


@pytest.fixture(scope="session")
def migrated_template(redis_server):
    """A database with every migration applied, once per session, to clone from."""
    from app import migrator

    name, url = create_database()
    migrator.apply(make_settings(url, redis_server.url))
    yield name
    drop_database(name)


@pytest.fixture
def migrated_database_url(migrated_template, database_dropper):
    """A fresh database with every migration applied (a clone of the session's template)."""
    name, url = create_database(template=migrated_template)
    yield url
    database_dropper.drop(name)


@pytest.fixture
def conn(migrated_database_url):
    """An autocommit connection to a fresh, fully migrated database."""
    with psycopg.connect(migrated_database_url, autocommit=True) as c:
        yield c


# -- Redis -----------------------------------------------------------------------------
@pytest.fixture(scope="session")
def redis_server():
    server = RedisServer().start()
    yield server
    server.remove()


@pytest.fixture
def redis_url(redis_server):
    if redis_server.proc is None or redis_server.proc.poll() is not None:
        redis_server.start()
    redis.Redis.from_url(redis_server.url).flushall()
    return redis_server.url


# -- the service as processes ------------------------------------------------------------
@pytest.fixture
def service_factory(redis_url):
    started: list[Service] = []

    def factory(database_url: str, env: dict | None = None, workers: int = 1, start: bool = True) -> Service:
        svc = Service(database_url, redis_url, env, workers)
        started.append(svc)
        return svc.start() if start else svc

    yield factory
    for svc in started:
        svc.stop()
        shutil.rmtree(svc.logdir, ignore_errors=True)


@pytest.fixture
def service(database_url, service_factory) -> Service:
    """API + one worker on a fresh, not yet migrated database."""
    return service_factory(database_url)


@pytest.fixture
def migrated_service(migrated_database_url, service_factory) -> Service:
    """API + one worker on a fresh, fully migrated database (no job in its ledger yet)."""
    return service_factory(migrated_database_url)


# -- TimescaleDB -------------------------------------------------------------------------
@pytest.fixture(scope="session")
def timescale_cluster():
    if not HAVE_TIMESCALEDB:
        pytest.skip(f"timescaledb.so not found in {PG_LIB}")
    cluster = TimescaleCluster()
    try:
        cluster.start()
    except Exception:
        cluster.stop()
        raise
    yield cluster
    cluster.stop()


@pytest.fixture
def timescale_database_url(timescale_cluster):
    """A fresh database on the TimescaleDB cluster (dropped after the test)."""
    name, url = timescale_cluster.create_database()
    yield url
    timescale_cluster.drop_database(name)


@pytest.fixture
def timescale_migrated_url(timescale_database_url, redis_url):
    """A fresh database on the TimescaleDB cluster with every migration applied."""
    from app import migrator

    migrator.apply(make_settings(timescale_database_url, redis_url))
    return timescale_database_url

"""Metrics mean what they say: a cancelled write is not an error, and
`migrations_applied_total` counts migrations applied by any path and survives restarts."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from types import SimpleNamespace

import psycopg
import pytest
import redis

from app import metrics, migrator
from app.backfill import bars
from tests.support.common import ROOT, TOKEN
from tests.support.db import make_settings
from tests.support.service import scrape

DB = "postgresql://nobody@127.0.0.1:1/none"


@pytest.fixture
def bound_metrics(redis_url):
    metrics.bind(redis.Redis.from_url(redis_url))
    yield redis.Redis.from_url(redis_url)
    metrics._redis = None


def sink_writes(r: redis.Redis, outcome: str) -> float:
    raw = r.hget(metrics.SINK_WRITES.key, json.dumps(["bars_ohlcv", outcome]))
    return float(raw) if raw else 0.0


@pytest.mark.parametrize(
    "stop_reason, outcome", [("cancelled", "cancelled"), ("timeout", "cancelled"), (None, "error")]
)
def test_a_batch_whose_session_was_ended_by_a_stop_counts_as_cancelled(bound_metrics, stop_reason, outcome):
    """The writers see a terminated session as a database error; only the job knows whether
    it was stopped (cancel, timeout, Ctrl-C) or the database refused the batch."""
    job = SimpleNamespace(task=SimpleNamespace(stopping=lambda: stop_reason is not None))
    slot = SimpleNamespace(
        error=psycopg.errors.AdminShutdown("terminating connection"), batch=SimpleNamespace(rows=700)
    )
    with pytest.raises(psycopg.errors.AdminShutdown):
        bars._Job._take(job, slot)
    assert sink_writes(bound_metrics, outcome) == 700
    other = "error" if outcome == "cancelled" else "cancelled"
    assert sink_writes(bound_metrics, other) == 0


@pytest.mark.slow
def test_migrations_applied_by_the_start_up_command_are_counted_and_survive_restarts(
    database_url, redis_url, monkeypatch
):
    monkeypatch.setenv("STORE_DISABLE_SWEEPER", "1")
    monkeypatch.delenv("PROMETHEUS_MULTIPROC_DIR", raising=False)
    from app import create_app, resources_of

    settings = make_settings(database_url, redis_url)
    app = create_app(settings)
    assert scrape(app.test_client())["migrations_applied_total"] == 0.0
    resources_of(app).close()

    # the start-up path of `make run` and of a container entry point: not a job, not the API
    env = {**os.environ, "DATABASE_URL": database_url, "REDIS_URL": redis_url, "ADMIN_TOKEN": TOKEN}
    subprocess.run([sys.executable, "-m", "app.manage", "migrate"], cwd=ROOT, env=env, check=True, timeout=120)
    total = float(len(migrator.disk_ids()))
    for _ in range(2):  # a fresh API process (a restart) reads the same number from the database
        app = create_app(settings)
        assert scrape(app.test_client())["migrations_applied_total"] == total
        resources_of(app).close()

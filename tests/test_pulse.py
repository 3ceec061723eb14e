"""Pulse in-process: the envelope, the inmem bus, the Redis Streams bus on a real Redis,
PULSE_ENABLED=false, and fail-open publishing that is still counted."""

from __future__ import annotations

import json
import math
import time

import pytest
import redis

from app import metrics, pulse
from app.drift.canonical import sha256
from app.pulse.inmem import BUS, InMemoryBus
from app.pulse.redis_streams import RedisStreamsBus
from tests.support.common import free_port
from tests.support.db import make_settings

DB = "postgresql://nobody@127.0.0.1:1/none"  # never used: publishing needs no database


@pytest.fixture
def bound_metrics(redis_url):
    """Shared metrics recorded in the test Redis (as the worker does)."""
    metrics.bind(redis.Redis.from_url(redis_url))
    yield redis.Redis.from_url(redis_url)
    metrics._redis = None


def counted(r: redis.Redis, stream: str, outcome: str, track: str = "v1") -> float:
    raw = r.hget(metrics.PULSE_PUBLISH.key, json.dumps([stream, track, outcome]))
    return float(raw) if raw else 0.0


def check_envelope(env: dict, schema_id: str, key: str | None, since: float) -> None:
    """The platform's envelope; `ts` is the publishing time: after `since`, not in the future."""
    assert set(env) == {"ts", "key", "meta", "payload"}
    assert isinstance(env["ts"], float) and since <= env["ts"] <= time.time()
    assert env["key"] == key
    meta = env["meta"]
    assert set(meta) == {"schema_id", "track", "headers", "hash"}
    assert meta["schema_id"] == schema_id and meta["track"] == "v1"
    assert meta["hash"] == sha256(env["payload"]) and len(meta["hash"]) == 64
    assert meta["headers"]["producer"] == "market-data-store"
    assert all(isinstance(k, str) and isinstance(v, str) for k, v in meta["headers"].items())


def test_inmem_bus_keeps_events_in_process(redis_url):
    BUS.clear()
    settings = make_settings(DB, redis_url, EVENT_BUS_BACKEND="inmem")
    since = time.time()
    seen = []
    unsubscribe = BUS.subscribe(pulse.JOBS_STREAM, seen.append)
    assert (
        pulse.publish_job_end(settings, run_id="r-1", job="migrate", status="failed", duration_s=1.23456, error="boom")
        is True
    )
    unsubscribe()
    pulse.publish_job_end(settings, run_id="r-2", job="migrate", status="success", duration_s=0.5)
    events = BUS.events(pulse.JOBS_STREAM)
    assert [e["payload"]["run_id"] for e in events] == ["r-1", "r-2"]
    assert seen == events[:1]
    check_envelope(events[0], "store.JobEvent", "r-1", since)
    payload = events[0]["payload"]
    assert (payload["job"], payload["status"], payload["duration_s"], payload["error"]) == (
        "migrate",
        "failed",
        1.235,
        "boom",
    )
    assert not redis.Redis.from_url(redis_url).keys("mdp:*")  # inmem never touches Redis


def test_inmem_bus_is_bounded_and_survives_a_bad_subscriber():
    bus = InMemoryBus(maxlen=5)

    def broken(_env):
        raise RuntimeError("consumer bug")

    bus.subscribe("s", broken)
    for i in range(12):
        bus.send("s", {"payload": {"i": i}})
    assert [e["payload"]["i"] for e in bus.events("s")] == [7, 8, 9, 10, 11]


def test_disabled_pulse_publishes_nothing(redis_url, bound_metrics):
    BUS.clear()
    for backend in ("inmem", "redis"):
        settings = make_settings(DB, redis_url, EVENT_BUS_BACKEND=backend, PULSE_ENABLED="false")
        assert pulse.publish_job_end(settings, run_id="r", job="migrate", status="success", duration_s=1) is False
    assert BUS.events(pulse.JOBS_STREAM) == []
    assert bound_metrics.keys("mdp:*") == []
    assert counted(bound_metrics, pulse.JOBS_STREAM, "success") == 0


def test_redis_backend_writes_the_platform_envelope(redis_url, bound_metrics):
    settings = make_settings(DB, redis_url, EVENT_BUS_BACKEND="redis")
    since = time.time()
    assert pulse.publish_job_end(settings, run_id="run-9", job="drift_check", status="success", duration_s=2)
    entries = bound_metrics.xrange("mdp:store.jobs")
    assert len(entries) == 1
    _id, fields = entries[0]
    assert list(fields) == [b"data"]  # exactly one field
    env = json.loads(fields[b"data"])
    check_envelope(env, "store.JobEvent", "run-9", since)
    assert env["payload"]["run_id"] == "run-9" and env["payload"]["status"] == "success"
    assert counted(bound_metrics, "store.jobs", "success") == 1
    field = json.dumps(["store.jobs", "v1"])
    assert bound_metrics.hget(metrics.PULSE_LATENCY.key, f"{field}|{math.inf}") == b"1"  # one observation


def test_redis_backend_uses_the_namespace(redis_url):
    settings = make_settings(DB, redis_url, EVENT_BUS_BACKEND="redis", MD_NAMESPACE="alt")
    pulse.publish(settings, "telemetry.custom", {"x": 1}, "telemetry.Custom", key="k")
    r = redis.Redis.from_url(redis_url)
    assert r.xlen("alt:telemetry.custom") == 1 and not r.keys("mdp:*")


def test_redis_streams_stay_bounded(redis_url):
    settings = make_settings(DB, redis_url)
    bus = RedisStreamsBus(settings, maxlen=100)
    for i in range(1000):
        bus.send("bounded", {"ts": 0.0, "key": None, "meta": {}, "payload": {"i": i}})
    length = redis.Redis.from_url(redis_url).xlen("mdp:bounded")
    assert 100 <= length < 1000  # MAXLEN ~: trimmed in whole nodes, never below the bound


def test_publishing_fails_open_and_is_counted(redis_url, bound_metrics):
    dead = f"redis://127.0.0.1:{free_port()}/0"
    settings = make_settings(DB, dead, EVENT_BUS_BACKEND="redis")
    result = pulse.publish_job_end(settings, run_id="r", job="migrate", status="success", duration_s=1)
    assert result is False  # no exception reached us
    assert counted(bound_metrics, "store.jobs", "error") == 1
    assert counted(bound_metrics, "store.jobs", "success") == 0


def test_drift_event_carries_new_and_old_field_names(redis_url):
    from app.drift.check import Result

    BUS.clear()
    settings = make_settings(DB, redis_url, EVENT_BUS_BACKEND="inmem")
    result = Result(
        schema="telemetry.HealthStatus",
        status="drift",
        drift_type="version_mismatch",
        local_sha256="a" * 64,
        registry_sha256="b" * 64,
        local_version="1.1.2",
        registry_version="1.2.0",
    )
    since = time.time()
    assert pulse.publish_drift(settings, result, track="v1", detected_at=1700000000.5)
    (env,) = BUS.events("telemetry.schema_drift")
    check_envelope(env, "telemetry.SchemaDriftEvent", "telemetry.HealthStatus", since)
    assert env["payload"] == {
        "service": "market-data-store",
        "schema_name": "telemetry.HealthStatus",
        "track": "v1",
        "local_sha": "a" * 64,
        "registry_sha": "b" * 64,
        "drift_type": "version_mismatch",
        "detected_at": 1700000000.5,
        "enforcement_mode": "warn",
        "repo": "market-data-store",
        "schema": "telemetry.HealthStatus",
        "local_sha256": "a" * 64,
        "registry_sha256": "b" * 64,
        "local_version": "1.1.2",
        "registry_version": "1.2.0",
    }

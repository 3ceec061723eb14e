"""Pulse: the store's events on the platform's event bus (docs/contracts.md, "Pulse events").

`EVENT_BUS_BACKEND` picks the bus: `inmem` (`app.pulse.inmem.BUS`, this process only) or
`redis` (Redis Streams, key `<MD_NAMESPACE>:<stream>`). `PULSE_ENABLED=false` turns
publishing off entirely. Publishing is fail-open: it never raises into the caller, and
every attempt is counted in `pulse_publish_total{stream,track,outcome}` (success | error)
and timed in `pulse_publish_latency_ms{stream,track}`.

Streams:
- `telemetry.schema_drift`: `telemetry.SchemaDriftEvent`, one per drifted schema per check.
- `store.jobs`: `store.JobEvent`, one per finished job (run id, kind, status, duration, error).
"""

from __future__ import annotations

import time
import uuid

import redis

from app import logs, metrics
from app.config import SERVICE, VERSION, Settings
from app.drift.canonical import sha256
from app.drift.check import Result
from app.pulse.inmem import BUS

DRIFT_STREAM = "telemetry.schema_drift"
DRIFT_SCHEMA = "telemetry.SchemaDriftEvent"
JOBS_STREAM = "store.jobs"
JOBS_SCHEMA = "store.JobEvent"
ENFORCEMENT_MODE = "warn"  # the store reports drift; it never refuses to work because of it

__all__ = ["BUS", "envelope", "publish", "publish_drift", "publish_job_end"]


def envelope(
    payload: dict, schema_id: str, track: str, key: str | None = None, headers: dict[str, str] | None = None
) -> dict:
    """The platform's event envelope; `meta.hash` is the sha256 of the canonical payload JSON."""
    base = {"producer": SERVICE, "producer_version": VERSION, "event_id": uuid.uuid4().hex}
    base.update(headers or {})
    return {
        "ts": time.time(),
        "key": key,
        "meta": {
            "schema_id": schema_id,
            "track": track,
            "headers": {k: str(v) for k, v in base.items()},
            "hash": sha256(payload),
        },
        "payload": payload,
    }


def _send(settings: Settings, client: redis.Redis | None, stream: str, envelope: dict) -> None:
    if settings.event_bus_backend != "redis":
        BUS.send(stream, envelope)
        return
    from app.pulse.redis_streams import RedisStreamsBus

    if client is not None:
        RedisStreamsBus(settings, client).send(stream, envelope)
        return
    with redis.Redis.from_url(settings.redis_url, socket_connect_timeout=1.0, socket_timeout=1.0) as own:
        RedisStreamsBus(settings, own).send(stream, envelope)


def publish(
    settings: Settings,
    stream: str,
    payload: dict,
    schema_id: str,
    key: str | None = None,
    redis: redis.Redis | None = None,
) -> bool:
    """Publish one event; True when the bus took it. Never raises.

    `redis`: the process's client for the Redis Streams bus (one of its own when None)."""
    if not settings.pulse_enabled:
        return False
    track = settings.registry_track
    started = time.perf_counter()
    try:
        _send(settings, redis, stream, envelope(payload, schema_id, track, key))
        outcome = "success"
    except Exception as exc:  # noqa: BLE001 - fail-open: the bus never fails the caller
        outcome = "error"
        logs.get("pulse").warning(
            "pulse publish failed",
            stream=stream,
            backend=settings.event_bus_backend,
            error=str(exc)[:200] or type(exc).__name__,
        )
    metrics.PULSE_LATENCY.observe((time.perf_counter() - started) * 1000, stream=stream, track=track)
    metrics.PULSE_PUBLISH.inc(stream=stream, track=track, outcome=outcome)
    return outcome == "success"


def publish_drift(
    settings: Settings, result: Result, track: str, detected_at: float, redis: redis.Redis | None = None
) -> bool:
    """The schema-drift event for one drifted schema (`app.drift.check.Result`).

    The platform's model requires every SHA and version field as a string: a value the
    registry does not have (a schema missing from it) is sent as "" rather than null."""
    payload = {
        # the platform's current field names
        "service": SERVICE,
        "schema_name": result.schema,
        "track": track,
        "local_sha": result.local_sha256 or "",
        "registry_sha": result.registry_sha256 or "",
        "drift_type": result.drift_type,
        "detected_at": detected_at,
        "enforcement_mode": ENFORCEMENT_MODE,
        # the names older consumers read
        "repo": SERVICE,
        "schema": result.schema,
        "local_sha256": result.local_sha256 or "",
        "registry_sha256": result.registry_sha256 or "",
        "local_version": result.local_version or "",
        "registry_version": result.registry_version or "",
    }
    return publish(settings, DRIFT_STREAM, payload, DRIFT_SCHEMA, key=result.schema, redis=redis)


def publish_job_end(
    settings: Settings,
    *,
    run_id: str,
    job: str,
    status: str,
    duration_s: float,
    error: str | None = None,
    redis: redis.Redis | None = None,
) -> bool:
    """The end of one job (called by app/jobs/runner.py for every job)."""
    payload = {
        "service": SERVICE,
        "run_id": run_id,
        "job": job,
        "status": status,
        "duration_s": round(float(duration_s), 3),
        "error": error,
        "finished_at": time.time(),
    }
    return publish(settings, JOBS_STREAM, payload, JOBS_SCHEMA, key=run_id, redis=redis)

"""The health document (docs/contracts.md, "Health document"): components, each bounded to about a second.

Checks borrow pooled connections and the shared Redis client; nothing is created per
request. Results are cached for a fraction of a second per process, so a probe storm
costs one database round trip per process per interval.
"""

from __future__ import annotations

import os
import threading
import time

import psycopg

from app import migrator
from app.config import SERVICE, VERSION, Settings
from app.drift import health_component
from app.resources import Resources

_RANK = {"healthy": 0, "degraded": 1, "unhealthy": 2}
_CACHE_TTL = 0.5
_cache: dict = {}
_cache_lock = threading.Lock()


def _component(name: str, state: str, **details: object) -> dict:
    doc: dict = {"name": name, "state": state}
    if details:
        doc["details"] = {k: str(v) for k, v in details.items()}  # the contract wants strings
    return doc


def _database(resources: Resources) -> tuple[dict, dict]:
    settings = resources.settings
    started = time.perf_counter()
    try:
        with resources.pool.connection(timeout=settings.health_timeout) as conn:
            with conn.transaction():
                conn.execute(f"SET LOCAL statement_timeout = {int(settings.health_timeout * 1000)}")
                schema = migrator.status(conn)
            registry = _registry_state(conn)
    except Exception as exc:  # noqa: BLE001 - any failure is a finding, not a crash
        # the class only: the message names hosts and ports, and this document is public
        reason = type(exc).__name__
        unknown = _component("schema", "degraded", reason="database unavailable")
        return _component("database", "degraded", reachable="false", error=reason), {
            "schema": unknown,
            "registry": None,
        }
    latency = (time.perf_counter() - started) * 1000
    state = "healthy" if latency < settings.health_timeout * 500 else "degraded"
    if schema["pending"]:
        schema_doc = _component("schema", "degraded", version=schema["version"], pending=len(schema["pending"]))
    else:
        schema_doc = _component("schema", "healthy", version=schema["version"])
    return _component("database", state, latency_ms=f"{latency:.1f}"), {"schema": schema_doc, "registry": registry}


def _registry_state(conn: psycopg.Connection) -> dict | None:
    """The registry as seen by the last drift check (never a live call from a probe)."""
    return health_component(conn)  # autocommit: its own failures leave nothing behind


def _redis(resources: Resources) -> dict:
    started = time.perf_counter()
    try:
        resources.queue.client().ping()
    except Exception as exc:  # noqa: BLE001
        return _component("redis", "degraded", reachable="false", error=type(exc).__name__)
    return _component("redis", "healthy", latency_ms=f"{(time.perf_counter() - started) * 1000:.1f}")


def _prometheus(settings: Settings) -> dict:
    path = settings.prometheus_multiproc_dir
    if path and not os.access(path, os.W_OK):
        return _component("prometheus", "degraded", error="PROMETHEUS_MULTIPROC_DIR is not writable")
    return _component("prometheus", "healthy", mode="multiprocess" if path else "single")


def document(resources: Resources) -> dict:
    """The current health document (cached for _CACHE_TTL seconds per process)."""
    now = time.monotonic()
    cached = _cache.get("doc")
    if cached and now - cached[0] < _CACHE_TTL:
        return cached[1]
    with _cache_lock:
        cached = _cache.get("doc")
        if cached and time.monotonic() - cached[0] < _CACHE_TTL:
            return cached[1]
        database, extra = _database(resources)
        components = [database, _redis(resources), _prometheus(resources.settings), extra["schema"]]
        if not resources.settings.drift_enabled:  # switched off on purpose: say so, never degrade
            components.append(
                _component("registry", "healthy", check="disabled", reason="REGISTRY_URL=off: no drift checks run")
            )
        elif extra["registry"]:
            components.append(extra["registry"])
        # The worst component's state. An unreachable dependency is 'degraded' (the platform:
        # "DB slow/unreachable -> degraded"); readiness looks at reachability instead.
        state = max((c["state"] for c in components), key=_RANK.__getitem__)
        doc = {"service": SERVICE, "state": state, "components": components, "version": VERSION, "ts": time.time()}
        _cache["doc"] = (time.monotonic(), doc)
        return doc


def ready(doc: dict) -> bool:
    """Ready when the database and Redis answer."""
    unreachable = {c["name"] for c in doc["components"] if c.get("details", {}).get("reachable") == "false"}
    return not unreachable & {"database", "redis"}

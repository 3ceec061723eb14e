"""Comparing the pinned schemas with the registry's copies.

For each pin: fetch the registry's copy, hash its `content` canonically and compare.

- `synced`: same version and same hash.
- `drift` / `version_mismatch`: the registry's version differs from the pinned one.
- `drift` / `content_mismatch`: same version, different content (the silent kind).
- `missing_in_registry`: the registry answered 404.
- `unknown`: the registry gave no usable answer (unreachable, 5xx, malformed). Its
  registry fields stay empty: a stale answer never becomes `synced` or `drift`.

The check's `registry_reachable` is true only when every fetch got an answer (200 or
404). Once the registry proves unreachable (connection refused, timeout), the remaining
pins are `unknown` without further calls: an outage costs one retry cycle, not one per
schema.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime

from app.drift.canonical import sha256
from app.drift.pins import Pin
from app.drift.registry import Registry, RegistryError, RegistryUnreachable


@dataclass
class Result:
    schema: str
    status: str
    drift_type: str | None
    local_sha256: str
    registry_sha256: str | None
    local_version: str | None
    registry_version: str | None
    error: str | None = None

    @property
    def drifted(self) -> bool:
        """True for findings that count as drift (metrics, events, last_drift_at)."""
        return self.status in ("drift", "missing_in_registry")

    def as_dict(self) -> dict:
        return asdict(self)


@dataclass
class Check:
    track: str
    checked_at: datetime
    registry_reachable: bool
    error: str | None = None
    results: list[Result] = field(default_factory=list)

    def counts(self) -> dict[str, int]:
        out = {"synced": 0, "drift": 0, "missing_in_registry": 0, "unknown": 0}
        for r in self.results:
            out[r.status] += 1
        return out


def compare(pin: Pin, doc: dict | None) -> Result:
    """The finding for one pin given the registry's document (None: the registry said 404)."""
    if doc is None:
        return Result(
            schema=pin.schema,
            local_sha256=pin.sha256,
            local_version=pin.version,
            status="missing_in_registry",
            drift_type="missing_in_registry",
            registry_sha256=None,
            registry_version=None,
        )
    content = doc["content"]
    registry_sha = sha256(content)
    registry_version = doc.get("core_version") or content.get("$core_version")
    if pin.version and registry_version and registry_version != pin.version:
        status, drift_type = "drift", "version_mismatch"
    elif registry_sha != pin.sha256:
        status, drift_type = "drift", "content_mismatch"
    else:
        status, drift_type = "synced", None
    return Result(
        schema=pin.schema,
        local_sha256=pin.sha256,
        local_version=pin.version,
        status=status,
        drift_type=drift_type,
        registry_sha256=registry_sha,
        registry_version=registry_version,
    )


def _unknown(pin: Pin, error: str | None) -> Result:
    return Result(
        schema=pin.schema,
        status="unknown",
        drift_type=None,
        local_sha256=pin.sha256,
        registry_sha256=None,
        local_version=pin.version,
        registry_version=None,
        error=error,
    )


def check(registry: Registry, track: str, pins: list[Pin], between: Callable[[], None] = lambda: None) -> Check:
    """Compare every pin of `track` with the registry. `between` runs before each fetch."""
    results: list[Result] = []
    first_error, cut_off = None, False
    for pin in pins:
        between()
        if cut_off:
            results.append(_unknown(pin, first_error))
            continue
        try:
            results.append(compare(pin, registry.schema(track, pin.name)))
        except RegistryError as exc:
            cut_off = isinstance(exc, RegistryUnreachable)
            first_error = first_error or str(exc)
            results.append(_unknown(pin, str(exc)))
    reachable = first_error is None
    return Check(
        track=track, checked_at=datetime.now(UTC), registry_reachable=reachable, error=first_error, results=results
    )

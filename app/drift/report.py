"""What a finished drift check tells the outside: metrics (shared via Redis) and Pulse events."""

from __future__ import annotations

import redis

from app import metrics
from app.config import SERVICE, Settings
from app.drift.check import Check


def report(settings: Settings, check: Check, redis: redis.Redis | None = None) -> int:
    """Record the check's metrics and publish one drift event per drifted schema.

    Returns how many drift events were published. Fail-open: never raises for Redis.
    """
    from app import pulse

    at = check.checked_at.timestamp()
    published = 0
    for r in check.results:
        if not r.drifted:
            continue
        metrics.SCHEMA_DRIFT.inc(repo=SERVICE, track=check.track, schema=r.schema)
        metrics.SCHEMA_DRIFT_LAST.set(at, repo=SERVICE, track=check.track, schema=r.schema)
        published += pulse.publish_drift(settings, r, track=check.track, detected_at=at, redis=redis)
    # after the drift gauges: StoreSchemaDriftSustained compares the two timestamps, and a
    # scrape between the writes must not see this check without its drift
    metrics.REGISTRY_UP.set(1 if check.registry_reachable else 0, track=check.track)
    metrics.DRIFT_LAST_CHECK.set(at, track=check.track)
    return published

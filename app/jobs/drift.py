"""Job `drift_check`: compare the pinned schemas with the registry, persist, report.

Triggered by POST /drift/check and by the scheduler (DRIFT_CHECK_SCHEDULE, default 5 min).
An unreachable registry is not a job failure: the check records `unknown` for every
schema and `store_registry_up 0`, which is what the alerts watch.
"""

from __future__ import annotations

from app.drift import pins, report, state
from app.drift.check import check
from app.drift.registry import Registry
from app.jobs.base import JobContext, JobError, JobKind


def run(ctx: JobContext, params: dict) -> dict:
    s = ctx.settings
    try:
        pinned = pins.for_track(s.registry_track)
    except pins.PinError as exc:
        raise JobError(str(exc)) from None
    if not pinned:
        raise JobError(f"no schemas are pinned for track {s.registry_track} (contracts/pins.json)")
    ctx.progress(track=s.registry_track, schemas=len(pinned))
    with Registry(s.registry_url) as registry:
        found = check(registry, s.registry_track, pinned, between=ctx.check)
    ctx.check()
    with ctx.connect(autocommit=True) as conn:
        check_id = state.record(conn, found, ctx.run_id)
    events = report.report(s, found, redis=ctx.redis)
    if not found.registry_reachable:
        ctx.log.warning("registry unreachable during drift check", error=found.error)
    for r in found.results:
        if r.drifted:
            ctx.log.warning(
                "schema drift",
                schema=r.schema,
                status=r.status,
                drift_type=r.drift_type,
                local_version=r.local_version,
                registry_version=r.registry_version,
            )
    return {
        "track": found.track,
        "checked_at": found.checked_at.isoformat(),
        "check_id": check_id,
        "registry_reachable": found.registry_reachable,
        "error": found.error,
        "counts": found.counts(),
        "schemas": [{"schema": r.schema, "status": r.status, "drift_type": r.drift_type} for r in found.results],
        "events_published": events,
    }


KIND = JobKind(
    name="drift_check",
    run=run,
    single_flight=lambda params: "drift_check",
    timeout_s=300,
    description="Compare the pinned registry schemas with the registry's copies.",
)

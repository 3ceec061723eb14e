"""Job `drift_check`: compare the pinned schemas with the registry, persist, report.

Triggered by POST /drift/check and by the scheduler (DRIFT_CHECK_SCHEDULE, default 5 min).
A check that could not get an answer for every schema from the registry is recorded
(`unknown` for those schemas, `store_registry_up 0`, which is what the alerts watch) and
then ends `failed` with the reason: its purpose, knowing whether the schemas drifted,
was not achieved. With `REGISTRY_URL=off` the job fails at once saying checks are disabled.
"""

from __future__ import annotations

from app.drift import pins, report, state
from app.drift.check import check
from app.drift.registry import Registry
from app.jobs.base import JobContext, JobError, JobKind


def run(ctx: JobContext, params: dict) -> dict:
    s = ctx.settings
    if not s.drift_enabled:
        raise JobError(
            "drift checks are disabled (REGISTRY_URL=off); set REGISTRY_URL to the schema registry to run them"
        )
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
    if not found.registry_reachable:
        unknown = found.counts()["unknown"]
        raise JobError(
            f"the registry at {s.registry_url} could not be reached or gave no usable answer: {found.error}; "
            f"{unknown} of {len(found.results)} schema(s) recorded as unknown (check id {check_id}); "
            "check that the registry is up and REGISTRY_URL points at it, or set REGISTRY_URL=off to disable drift checks"
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

"""Job `refresh_aggregate`: refresh continuous aggregates (one or all), pending or over a window."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime, timedelta

from app import times, validation
from app.config import Settings
from app.errors import BadRequest
from app.jobs.base import JobContext, JobError, JobKind, locks_or_job_error
from app.timeseries import rollups

MAX_WINDOW = timedelta(days=20_000)  # refreshes run one day per transaction: bound the slices


def parse_time(field: str, value: object) -> datetime:
    """Strict ISO 8601 (a 'Z' or offset; no offset means UTC); 400 naming the field."""
    if not isinstance(value, str) or not value.strip():
        raise BadRequest(f"{field} must be an ISO 8601 time such as 2024-01-31T00:00:00Z")
    try:
        ts = datetime.fromisoformat(value.strip())
    except ValueError:
        raise BadRequest(f"{field} is not an ISO 8601 time: {value[:80]!r}") from None
    try:
        ts = times.utc(ts)
    except OverflowError:  # year 1 or 9999 shifted by its offset past datetime's range
        raise BadRequest(f"{field} is out of range (years 1000 to 8999)") from None
    if not times.in_range(ts):
        raise BadRequest(f"{field} is out of range (years 1000 to 8999)")
    return ts


def parse(body: dict, settings: Settings) -> dict:
    validation.only(body, ["name", "start", "end"])
    name = validation.one_of(body.get("name"), rollups.NAMES, "name", "an aggregate")
    start = parse_time("start", body["start"]) if body.get("start") is not None else None
    end = parse_time("end", body["end"]) if body.get("end") is not None else None
    if end is not None and start is None:
        raise BadRequest("end needs a start (without both, the pending invalidations are refreshed)")
    if start is not None and start >= (end or datetime.now(UTC)):
        raise BadRequest("start must be before end" + ("" if end else " (now, when end is not given)"))
    if start is not None and (end or datetime.now(UTC)) - start > MAX_WINDOW:
        raise BadRequest(f"the window from start to end may span at most {MAX_WINDOW.days} days")
    return {
        "name": name,
        "start": times.iso(start),
        "end": times.iso(end),
    }


def names(params: dict, default: tuple[str, ...] = rollups.NAMES) -> list[str]:
    """The aggregates a job's parameters ask for (`name`, or all of `default`)."""
    return [params["name"]] if params["name"] else list(default)


def refresh_each(
    ctx: JobContext,
    names: list[str],
    refresh: Callable[[str], dict],
    after: Callable[[str, dict], None] | None = None,
) -> dict[str, dict]:
    """Refresh aggregates one after the other: `refresh(name)` -> its result, a check
    before each, locks lost after the retries fail the job, progress after each (then
    `after(name, result)`). Shared by refresh_aggregate and backfill.aggregates."""
    results: dict[str, dict] = {}
    for name in names:
        ctx.check()
        with locks_or_job_error(f"refresh of {name}"):
            results[name] = refresh(name)
        ctx.progress(aggregates=results)
        ctx.log.info("aggregate refreshed", aggregate=name, result=results[name])
        if after is not None:
            after(name, results[name])
    return results


def bucket_warnings(results: dict[str, dict]) -> list[str]:
    """A warning per aggregate whose refresh had to skip buckets it could not compute."""
    return [
        f"{name}: {r['failed_bucket_count']} bucket(s) could not be computed and were skipped (they stay "
        f"invalidated; first: {r['failed_buckets'][0]}); the rows in them hold values the sums cannot hold"
        for name, r in results.items()
        if r.get("failed_bucket_count")
    ]


def run(ctx: JobContext, params: dict) -> dict:
    with ctx.connect(autocommit=True) as conn:
        if params["start"]:
            start = datetime.fromisoformat(params["start"])
            end = datetime.fromisoformat(params["end"]) if params["end"] else datetime.now(UTC)
            if start >= end:
                raise JobError(f"start {params['start']} is not before now")

            def refresh(name: str) -> dict:
                return rollups.refresh(conn, name, start, end, check=ctx.check)

        else:

            def refresh(name: str) -> dict:
                return rollups.refresh_pending(conn, name, check=ctx.check)

        results = refresh_each(ctx, names(params), refresh)
    return {"aggregates": results, "warnings": bucket_warnings(results)}


def _key(params: dict) -> str:
    key = f"refresh_aggregate:{params['name'] or '*'}"
    if params["start"]:
        key += f":{params['start']}..{params['end'] or 'now'}"
    return key


KIND = JobKind(
    name="refresh_aggregate",
    run=run,
    parse=parse,
    single_flight=_key,
    timeout_s=3600,
    description="Refresh continuous aggregates: the pending invalidations, or a start/end window.",
)

"""Job `refresh_aggregate`: refresh continuous aggregates (one or all), pending or over a window."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import psycopg

from app import validation
from app.errors import BadRequest
from app.jobs.base import JobContext, JobError, JobKind
from app.timeseries import rollups

_MIN = datetime(1000, 1, 1, tzinfo=UTC)
_MAX = datetime(9000, 1, 1, tzinfo=UTC)


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
        ts = ts.replace(tzinfo=UTC) if ts.tzinfo is None else ts.astimezone(UTC)
    except OverflowError:  # year 1 or 9999 shifted by its offset past datetime's range
        raise BadRequest(f"{field} is out of range (years 1000 to 8999)") from None
    if not _MIN <= ts < _MAX:
        raise BadRequest(f"{field} is out of range (years 1000 to 8999)")
    return ts


def parse(body: dict) -> dict:
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
        "start": start.isoformat() if start else None,
        "end": end.isoformat() if end else None,
    }


def run(ctx: JobContext, params: dict) -> dict:
    names = [params["name"]] if params["name"] else list(rollups.NAMES)
    results: dict[str, dict] = {}
    with ctx.connect(autocommit=True) as conn:
        for name in names:
            ctx.check()
            try:
                if params["start"]:
                    start = datetime.fromisoformat(params["start"])
                    end = datetime.fromisoformat(params["end"]) if params["end"] else datetime.now(UTC)
                    if start >= end:
                        raise JobError(f"start {params['start']} is not before now")
                    results[name] = rollups.refresh(conn, name, start, end, check=ctx.check)
                else:
                    results[name] = rollups.refresh_pending(conn, name, check=ctx.check)
            except (psycopg.errors.LockNotAvailable, psycopg.errors.DeadlockDetected) as exc:
                raise JobError(f"refresh of {name} gave up waiting for locks: {str(exc).splitlines()[0]}") from None
            ctx.progress(aggregates=results)
            ctx.log.info("aggregate refreshed", aggregate=name, result=results[name])
    warnings = [
        f"{name}: {r['failed_bucket_count']} bucket(s) could not be computed and were skipped (they stay "
        f"invalidated; first: {r['failed_buckets'][0]}); the rows in them hold values the sums cannot hold"
        for name, r in results.items()
        if r.get("failed_bucket_count")
    ]
    return {"aggregates": results, "warnings": warnings}


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

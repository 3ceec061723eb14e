"""Backfill job kinds: `backfill.bars_ohlcv` and `backfill.aggregates`.

`POST /backfill/<name>` triggers them (`CATALOGUE` maps the URL name to the kind, and
`GET /backfill` lists each with its parameters). The loading itself lives in
`app/backfill/`; this module validates parameters and runs the jobs.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime, timedelta

import psycopg

from app import db, validation
from app.backfill import bars, runs, sources
from app.backfill.checkpoints import State
from app.backfill.rows import RowLimits
from app.backfill.task import BackfillError, Task
from app.config import Settings
from app.errors import BadRequest
from app.intervals import IntervalError, format_interval, parse_interval
from app.jobs import aggregates
from app.jobs.base import JobContext, JobError, JobKind
from app.timeseries import catalog, rollups

MAX_BATCH_ROWS = 1_000_000
DEFAULT_BATCH_ROWS = 100_000
DEFAULT_SLICE = timedelta(days=1)
MAX_SLICES = 20_000
AGGREGATES_JOB = "backfill.aggregates"


@dataclass(frozen=True)
class Param:
    name: str
    type: str
    required: bool
    default: object
    description: str

    def doc(self) -> dict:
        return {
            "name": self.name,
            "type": self.type,
            "required": self.required,
            "default": self.default,
            "description": self.description,
        }


def task(ctx: JobContext) -> Task:
    """What the backfill code gets from this job: its sessions, checks, progress, outcome."""

    @contextmanager
    def connect() -> Iterator[psycopg.Connection]:
        with ctx.connect(autocommit=True) as conn:
            yield conn

    def outcome(exc: BaseException) -> tuple[str, str]:
        status, message = ctx.outcome(exc)
        return str(status), message

    return Task(
        run_id=ctx.run_id,
        connect=connect,
        connect_aside=lambda: db.connect(ctx.settings, application_name="store-backfill-close", autocommit=True),
        check=ctx.check,
        progress=ctx.progress,
        outcome=outcome,
        stopping=lambda: ctx.stop_reason is not None,
        log=ctx.log,
        heartbeat_s=ctx.settings.heartbeat_interval,
    )


def _check_fields(body: dict, params: tuple[Param, ...]) -> None:
    validation.only(body, [p.name for p in params])
    for p in params:
        if p.required and body.get(p.name) is None:
            raise BadRequest(f"{p.name} is required: {p.description}")


def _int(body: dict, name: str, default: int, low: int, high: int) -> int:
    value = body.get(name, default)
    if value is None:
        return default
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        raise BadRequest(f"{name} must be an integer from {low} to {high}")
    return value


def _name(body: dict, name: str, limit: int) -> str | None:
    value = body.get(name)
    if value is None:
        return None
    if not isinstance(value, str) or not value.strip() or len(value.strip()) > limit:
        raise BadRequest(f"{name} must be a non-empty string of at most {limit} characters")
    value = value.strip()
    if not value.isascii() or not value.isprintable() or any(c in value for c in '"\\[],'):
        raise BadRequest(f'{name} must be printable ASCII without any of " \\ [ ] ,')
    return value


# -- bars_ohlcv ---------------------------------------------------------------------------------
BARS_PARAMS = (
    Param(
        "source",
        "string",
        True,
        None,
        "a path inside BACKFILL_SOURCE_DIR, or an http(s) URL allowed by BACKFILL_URL_ALLOW; "
        "gzip is detected by its content",
    ),
    Param("format", "string", False, None, "ndjson or csv (with a header); taken from the file name when absent"),
    Param(
        "max_bad_rows",
        "integer",
        False,
        0,
        "invalid rows to skip (counted and sampled in the result); one more fails the job",
    ),
    Param("batch_rows", "integer", False, DEFAULT_BATCH_ROWS, f"rows per committed batch (1..{MAX_BATCH_ROWS})"),
    Param("provider", "string", False, None, "provider for rows that have none"),
    Param("interval", "string", False, None, "interval for rows that have none"),
)


def parse_bars(body: dict, settings: Settings) -> dict:
    _check_fields(body, BARS_PARAMS)
    try:
        source = sources.parse_source(body["source"], settings.backfill_source_dir, settings.backfill_url_allow)
        fmt = sources.detect_format(source, body.get("format"))
    except sources.SourceError as exc:
        raise BadRequest(str(exc)) from None
    return {
        "source": source.location,
        "format": fmt,
        "max_bad_rows": _int(body, "max_bad_rows", 0, 0, 1_000_000_000),
        "batch_rows": _int(body, "batch_rows", DEFAULT_BATCH_ROWS, 1, MAX_BATCH_ROWS),
        "provider": _name(body, "provider", 64),
        "interval": _name(body, "interval", 16),
    }


def row_limits(s: Settings, source: sources.Source, now: float) -> RowLimits:
    """The row rules of one load: line bounds, the time window ending `now` + BACKFILL_TIME_AHEAD,
    and whether errors may repeat values (not for URL sources: their content is the server's)."""
    return RowLimits(
        max_line_bytes=s.backfill_max_line_bytes,
        max_blank_lines=s.backfill_max_blank_lines,
        min_epoch=s.backfill_time_min.timestamp(),
        max_epoch=now + s.backfill_time_ahead.total_seconds(),
        show_values=source.kind == "file",
        slot_seconds=catalog.table(bars.TABLE).chunk.total_seconds(),
    )


def run_bars(ctx: JobContext, params: dict) -> dict:
    try:
        s = ctx.settings
        source = sources.parse_source(params["source"], s.backfill_source_dir, s.backfill_url_allow)
        return bars.load(
            task(ctx),
            bars.Params(
                source=source,
                format=params["format"],
                max_bad_rows=params["max_bad_rows"],
                batch_rows=params["batch_rows"],
                provider=params["provider"],
                interval=params["interval"],
                source_dir=s.backfill_source_dir,
                limits=sources.Limits.from_settings(s),
                row_limits=row_limits(s, source, time.time()),
                max_partitions_per_batch=s.backfill_max_partitions_per_batch,
            ),
        )
    except BackfillError as exc:
        raise JobError(str(exc)) from None


def _bars_key(params: dict) -> str:
    kind = "http" if "://" in params["source"] else "file"
    return f"{bars.JOB}:{kind}:{params['source']}"


BARS = JobKind(
    name=bars.JOB,
    run=run_bars,
    parse=parse_bars,
    single_flight=_bars_key,
    description="Load OHLCV bars from an NDJSON or CSV file (optionally gzip) or URL into bars_ohlcv: "
    "validated, upserted in committed batches, resumable after a crash.",
)


# -- aggregates ----------------------------------------------------------------------------------
AGG_PARAMS = (
    Param("start", "string", True, None, "ISO 8601 start of the window (widened to whole buckets)"),
    Param("end", "string", True, None, "ISO 8601 end of the window (exclusive)"),
    Param("name", "string", False, None, "one aggregate (bars_ohlcv_1h or bars_ohlcv_1d); all when absent"),
    Param(
        "slice",
        "string",
        False,
        format_interval(DEFAULT_SLICE),
        "time per transaction, e.g. '6 hours' (at least one bucket of the aggregate)",
    ),
)


def parse_aggregates(body: dict, settings: Settings) -> dict:
    _check_fields(body, AGG_PARAMS)
    start, end = aggregates.parse_time("start", body["start"]), aggregates.parse_time("end", body["end"])
    if start >= end:
        raise BadRequest("start must be before end")
    name = body.get("name")
    if name is not None and name not in rollups.NAMES:
        raise BadRequest(f"name must be one of {', '.join(rollups.NAMES)}, got {str(name)[:80]!r}")
    raw_slice = body.get("slice")
    try:
        width = DEFAULT_SLICE if raw_slice is None else parse_interval(raw_slice)
    except IntervalError as exc:
        raise BadRequest(f"slice: {exc}") from None
    if width < timedelta(minutes=1):
        raise BadRequest("slice must be at least one minute")
    slices = (end - start) / width
    if slices > MAX_SLICES:
        raise BadRequest(
            f"slice: the window would take {slices:.0f} slices, more than {MAX_SLICES}; use a longer slice"
        )
    return {
        "start": start.isoformat(),
        "end": end.isoformat(),
        "name": name,
        "slice_seconds": int(width.total_seconds()),
    }


def run_aggregates(ctx: JobContext, params: dict) -> dict:
    # By default the rollups of what a backfill loads (bars_ohlcv).
    names = aggregates.names(params, default=rollups.names_for("bars_ohlcv"))
    start, end = datetime.fromisoformat(params["start"]), datetime.fromisoformat(params["end"])
    width = timedelta(seconds=params["slice_seconds"])
    done = {"slices": 0}
    state = State()

    def check() -> None:  # called by the refresh before each slice
        ctx.check()
        done["slices"] += 1
        ctx.progress(slices_started=done["slices"])

    with ctx.connect(autocommit=True) as conn:
        job_run_id = runs.start(
            conn,
            job_name=AGGREGATES_JOB,
            dataset=",".join(names),
            provider=None,
            fingerprint="",
            metadata={"run_id": ctx.run_id, **params},
        )

        def refresh(name: str) -> dict:
            return rollups.refresh(conn, name, start, end, check=check, slice_width=width)

        def after(name: str, result: dict) -> None:
            state.rows_written += int(result.get("rows_written") or 0)
            runs.heartbeat(conn, job_run_id, state, None)

        try:
            results = aggregates.refresh_each(ctx, names, refresh, after)
        except BaseException as exc:
            runs.close_on_error(task(ctx), job_run_id, state, None, exc)
            raise
        runs.finish(conn, job_run_id, "success", state, None)
    return {
        "window": {"start": params["start"], "end": params["end"]},
        "slice": format_interval(width),
        "aggregates": results,
        "job_run_id": job_run_id,
    }


AGGREGATES = JobKind(
    name=AGGREGATES_JOB,
    run=run_aggregates,
    parse=parse_aggregates,
    single_flight=lambda p: f"{AGGREGATES_JOB}:{p['name'] or '*'}:{p['start']}..{p['end']}:{p['slice_seconds']}",
    description="Recompute the continuous aggregates over a historical window, one short transaction per slice.",
)

# URL name -> kind, with the parameters GET /backfill lists.
CATALOGUE: dict[str, tuple[JobKind, tuple[Param, ...]]] = {
    "bars_ohlcv": (BARS, BARS_PARAMS),
    "aggregates": (AGGREGATES, AGG_PARAMS),
}
KINDS: dict[str, JobKind] = {kind.name: kind for kind, _ in CATALOGUE.values()}


def catalogue() -> list[dict]:
    return [
        {"name": name, "job": kind.name, "description": kind.description, "parameters": [p.doc() for p in params]}
        for name, (kind, params) in CATALOGUE.items()
    ]

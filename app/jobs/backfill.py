"""Backfill job kinds: `backfill.bars_ohlcv` and `backfill.aggregates`.

`POST /backfill/<name>` triggers them (`CATALOGUE` maps the URL name to the kind, and
`GET /backfill` lists each with its parameters). The loading itself lives in
`app/backfill/`; this module validates parameters and runs the jobs.
"""

from __future__ import annotations

import time
import zlib
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import psycopg

from app import db, validation
from app.backfill import bars, dryrun, fileset, layout, runs, sources
from app.backfill.checkpoints import State
from app.backfill.rows import RowLimits
from app.backfill.task import BackfillError, Task
from app.config import Settings
from app.errors import BadRequest
from app.intervals import IntervalError, format_interval, parse_interval
from app.jobs import aggregates
from app.jobs.base import JobContext, JobError, JobKind
from app.timeseries import intervals as bar_intervals
from app.timeseries import rollups

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
        False,
        None,
        "a path inside BACKFILL_SOURCE_DIR, a glob there ('polygon/2024-*.csv.gz': one child run per file), "
        "or an http(s) URL allowed by BACKFILL_URL_ALLOW; gzip is detected by its content. source or sources "
        "is required",
    ),
    Param("sources", "array", False, None, "several paths or URLs: one parent run, one child run per file"),
    Param("format", "string", False, None, "ndjson or csv; taken from the file name when absent"),
    Param(
        "max_bad_rows",
        "integer",
        False,
        0,
        "invalid rows to skip (counted and sampled in the result); one more fails the job",
    ),
    Param("batch_rows", "integer", False, DEFAULT_BATCH_ROWS, f"rows per committed batch (1..{MAX_BATCH_ROWS})"),
    Param("provider", "string", False, None, "provider of every row (a row with its own must agree)"),
    Param("interval", "string", False, None, "interval of every row (a row with its own must agree)"),
    Param("symbol", "string", False, None, "symbol of every row, for single-series files"),
    Param("preset", "string", False, None, f"a vendor layout in one word: {', '.join(layout.PRESETS)}"),
    Param(
        "columns",
        "object|array",
        False,
        None,
        "our field -> the file's column (CSV header name or JSON key, case-insensitive; '' for an empty "
        "header), or with header false the file's columns in order (a field name, or null to skip)",
    ),
    Param("header", "boolean", False, True, "false: the CSV has no header line (columns must be a list)"),
    Param("delimiter", "string", False, ",", "CSV delimiter: ',', ';', '\\t' or '|'"),
    Param("decimal", "string", False, ".", "decimal separator of numbers: '.' or ','"),
    Param(
        "ts_format",
        "string",
        False,
        "iso",
        "iso (ISO 8601, a date alone is midnight), epoch_s, epoch_ms, epoch_us, epoch_ns, epoch_auto "
        "(unit by magnitude), or a strftime pattern",
    ),
    Param(
        "timezone",
        "string",
        False,
        "UTC",
        "IANA zone of times without an offset; ambiguous or non-existent local times are bad rows",
    ),
    Param("volume", "string", False, "required", "optional: a missing column or empty value stores NULL"),
    Param(
        "dry_run", "boolean", False, False, "read and validate everything, write nothing; report what a load would do"
    ),
)


def parse_bars(body: dict, settings: Settings) -> dict:
    """The job's parameters. A single file: the child-shaped params. A glob or `sources`:
    {"files": [child params...], "parent": parent params} (app/jobs/fanout.py submits them)."""
    _check_fields(body, BARS_PARAMS)
    s = settings
    if (body.get("source") is None) == (body.get("sources") is None):
        raise BadRequest("give either source (a path, glob or URL) or sources (a list of them)")
    try:
        lay, preset = layout.parse(body)
    except layout.LayoutError as exc:
        raise BadRequest(str(exc)) from None
    common: dict[str, Any] = {
        "max_bad_rows": _int(body, "max_bad_rows", 0, 0, 1_000_000_000),
        "batch_rows": _int(body, "batch_rows", DEFAULT_BATCH_ROWS, 1, MAX_BATCH_ROWS),
        "provider": _name({**preset, **body}, "provider", 64),
        "interval": _bar_interval(_name({**preset, **body}, "interval", 16)),
    }
    symbol = _name(body, "symbol", 32)
    if symbol is not None:
        lay = layout.Layout.from_params({**lay.params(), "symbol": symbol})
    if not lay.is_default:
        common["layout"] = lay.params()
    if validation.flag(body, "dry_run"):
        common["dry_run"] = True
    fmt = preset.get("format", body.get("format"))
    try:
        if body.get("sources") is not None or fileset.is_glob(body.get("source")):
            files = fileset.expand(
                body.get("source"),
                body.get("sources"),
                s.backfill_source_dir,
                s.backfill_max_files,
                s.backfill_url_allow,
            )
        else:
            files = [sources.parse_source(body["source"], s.backfill_source_dir, s.backfill_url_allow)]
            if files[0].kind == "file":
                fileset.check_visible(files[0].location)
        children = []
        constants = {
            k: v
            for k, v in (("provider", common["provider"]), ("interval", common["interval"]), ("symbol", lay.symbol))
            if v is not None
        }
        for i, src in enumerate(files):
            child_fmt = sources.detect_format(src, fmt)
            lay.check_format(child_fmt)
            if child_fmt == "csv" and src.kind == "file" and i < HEADER_CHECKS:
                _check_header(s, src, lay, constants)
            children.append({"source": src.location, "format": child_fmt, **common})
    except sources.SourceError as exc:
        raise BadRequest(_with_root(str(exc), s.backfill_source_dir)) from None
    except layout.LayoutError as exc:
        raise BadRequest(str(exc)) from None
    if body.get("sources") is None and not fileset.is_glob(body.get("source")):
        return children[0]
    parent = {"sources": [c["source"] for c in children], "formats": sorted({c["format"] for c in children}), **common}
    if fileset.is_glob(body.get("source")):
        parent["glob"] = str(body["source"]).strip()
    return {"files": children, "parent": parent}


HEADER_CHECKS = 20  # local CSV files whose header is checked at trigger time (the rest: by their run)


def _check_header(s: Settings, src: sources.Source, lay: layout.Layout, constants: dict) -> None:
    with sources.open_source(src, s.backfill_source_dir, sources.Limits.from_settings(s)) as opened:
        try:
            lay.check_header(opened.stream, constants)
        except sources.SourceError as exc:
            raise sources.SourceError(f"{src.location}: {exc}") from None
        except (OSError, EOFError, zlib.error) as exc:
            raise sources.SourceError(f"{src.location} cannot be read: {exc}") from None


def _with_root(message: str, root: str) -> str:
    """Source errors that speak of BACKFILL_SOURCE_DIR say where to find its resolved path."""
    if "BACKFILL_SOURCE_DIR" in message and fileset.resolved_root(root) not in message:
        return f"{message} ({fileset.where(root)})"
    return message


def _bar_interval(value: str | None) -> str | None:
    """The default interval in its canonical spelling ('1D' -> '1d'); 400 naming the allowed ones."""
    try:
        return None if value is None else bar_intervals.normalise(value)
    except bar_intervals.UnknownInterval as exc:
        raise BadRequest(str(exc)) from None


def row_limits(s: Settings, source: sources.Source, now: float) -> RowLimits:
    """The row rules of one load: line bounds, the time window ending `now` + BACKFILL_TIME_AHEAD,
    and whether errors may repeat values (not for URL sources: their content is the server's)."""
    return RowLimits(
        max_line_bytes=s.backfill_max_line_bytes,
        max_blank_lines=s.backfill_max_blank_lines,
        min_epoch=s.backfill_time_min.timestamp(),
        max_epoch=now + s.backfill_time_ahead.total_seconds(),
        show_values=source.kind == "file",
    )


def run_bars(ctx: JobContext, params: dict) -> dict:
    root = ctx.settings.backfill_source_dir
    try:
        s = ctx.settings
        source = sources.parse_source(params["source"], root, s.backfill_url_allow)
    except sources.SourceError as exc:
        raise JobError(_with_root(str(exc), root)) from None
    bars_params = bars.Params(
        source=source,
        format=params["format"],
        max_bad_rows=params["max_bad_rows"],
        batch_rows=params["batch_rows"],
        provider=params["provider"],
        interval=params["interval"],
        source_dir=root,
        limits=sources.Limits.from_settings(s),
        row_limits=row_limits(s, source, time.time()),
        max_partitions_per_batch=s.backfill_max_partitions_per_batch,
        layout=layout.Layout.from_params(params.get("layout") or {}),
        group=params.get("group"),
    )
    try:
        if params.get("dry_run"):
            return dryrun.run(task(ctx), bars_params)
        return bars.load(task(ctx), bars_params)
    except BackfillError as exc:
        raise JobError(_with_root(str(exc), root)) from None


def _bars_key(params: dict) -> str:
    kind = "http" if "://" in params["source"] else "file"
    key = f"{bars.JOB}:{kind}:{params['source']}"
    return key + ":dry_run" if params.get("dry_run") else key


BARS = JobKind(
    name=bars.JOB,
    run=run_bars,
    parse=parse_bars,
    single_flight=_bars_key,
    description="Load OHLCV bars from NDJSON or CSV files (optionally gzip, vendor layouts, globs) or URLs "
    "into bars_ohlcv: validated, upserted in committed batches, resumable after a crash.",
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
            warnings = aggregates.outcome(results)
        except BaseException as exc:
            runs.close_on_error(task(ctx), job_run_id, state, None, exc)
            raise
        runs.finish(conn, job_run_id, runs.RunStatus.SUCCESS, state, None)
    return {
        "window": {"start": params["start"], "end": params["end"]},
        "slice": format_interval(width),
        "aggregates": results,
        "job_run_id": job_run_id,
        "warnings": warnings,
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
    out: list[dict[str, Any]] = [
        {"name": name, "job": kind.name, "description": kind.description, "parameters": [p.doc() for p in params]}
        for name, (kind, params) in CATALOGUE.items()
    ]
    out[0]["presets"] = layout.describe_presets()
    return out

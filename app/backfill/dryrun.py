"""Validate-only backfills (`"dry_run": true`): read and check the whole source, write nothing.

The source is opened and parsed exactly as a load would (same layout, same rules), but
no batch goes to the database: no rows, no checkpoint, no `job_runs` row. The result
says what a load would do: rows read, good and bad (samples with line numbers, all of
them counted, past `max_bad_rows` too), symbols, providers, intervals, the first and
last time, and the partitions a load would create.
"""

from __future__ import annotations

import time
from datetime import datetime, timedelta
from typing import TYPE_CHECKING

from app.backfill import sources
from app.backfill.progress import Progress
from app.backfill.rows import SAMPLE_LIMIT, epoch_to_datetime
from app.backfill.task import BackfillError, Task

if TYPE_CHECKING:
    from app.backfill.bars import Params

MAX_LISTED = 100  # symbols named in the result (all are counted)


def run(task: Task, params: Params) -> dict:
    """params: app.backfill.bars.Params."""
    from app.timeseries import backend, catalog, partitions
    from app.timeseries import intervals as bar_intervals

    width = catalog.table("bars_ohlcv").chunk
    started = time.monotonic()
    good = read = bad = 0
    samples: list[dict] = []
    symbols: set[str] = set()
    providers: set[str] = set()
    intervals: set[str] = set()
    slots: dict[timedelta | None, set[int]] = {}  # days with rows, by the grain of their batch
    lo = hi = None
    try:
        with sources.open_source(params.source, params.source_dir, params.limits, task.stopping) as opened:
            reader = params.reader(opened.stream, max_bad_rows=2**62)
            progress = Progress(task.progress, opened, reader, phase="validating")
            for batch in reader.batches():
                task.check()
                good += batch.rows
                read += batch.read
                bad += batch.rejected
                samples.extend(batch.samples[: SAMPLE_LIMIT - len(samples)])
                symbols |= batch.symbols
                providers |= batch.providers
                intervals |= batch.intervals
                slots.setdefault(bar_intervals.finest(batch.intervals), set()).update(batch.slots)
                if batch.rows:
                    lo = batch.min_epoch if lo is None else min(lo, batch.min_epoch)
                    hi = batch.max_epoch if hi is None else max(hi, batch.max_epoch)
                progress.update(rows_read=read, rows_rejected=bad)
            compressed = opened.compressed
    except sources.SourceError as exc:
        raise BackfillError(str(exc)) from None
    with task.connect() as conn:
        hyper = backend.is_hypertable(conn, "bars_ohlcv")
        taken = partitions.existing(conn, "bars_ohlcv")
        planned: list[tuple[datetime, datetime]] = []
        for size in sorted(slots, key=lambda g: g or timedelta(0)):
            days = [partitions.EPOCH + slot * partitions.DAY for slot in slots[size]]
            made = partitions.plan(taken + [partitions.Partition("", a, b) for a, b in planned], days, width, size)
            planned.extend(made)
        if hyper:  # TimescaleDB makes chunks of its own width as rows arrive; the wide ones are made ahead
            planned = [(a, b) for a, b in planned if not partitions.own_chunk(a, b, width)]
            note = "TimescaleDB creates chunks of the table's width as rows arrive; wider ones are listed"
        else:
            note = None
        to_create = [{"from": a.isoformat(), "to": b.isoformat()} for a, b in sorted(planned)]
    verdict = "would load" if bad <= params.max_bad_rows else "would fail"
    warnings = []
    if bad > params.max_bad_rows:
        first = samples[0] if samples else {"line": None, "reason": ""}
        warnings.append(
            f"a load would fail: {bad} bad rows, more than max_bad_rows={params.max_bad_rows}; "
            f"first bad line {first['line']}: {first['reason']}"
        )
    result = {
        "dry_run": True,
        "verdict": verdict,
        "source": params.source.location,
        "format": params.format,
        "compressed": compressed,
        "rows_read": read,
        "rows_good": good,
        "rows_rejected": bad,
        "bad_rows": samples,
        "symbols": len(symbols),
        "symbol_names": sorted(symbols)[:MAX_LISTED],
        "providers": sorted(providers),
        "intervals": sorted(intervals),
        "min_ts": epoch_to_datetime(lo).isoformat() if lo is not None else None,
        "max_ts": epoch_to_datetime(hi).isoformat() if hi is not None else None,
        "partitions_to_create": to_create,
        "warnings": warnings,
        "elapsed_s": round(time.monotonic() - started, 3),
    }
    if note:
        result["partitions_note"] = note
    return result

"""Continuous aggregates (rollups), each defined by data in `catalog.ROLLUPS`.

`bars_ohlcv_1h` / `bars_ohlcv_1d` over `bars_ohlcv`, and six tick rollups over
`tick_data` (`tick_agg_1m`, `tick_agg_5m`, `tick_agg_1h`, `tick_vwap_daily`,
`tick_spread_stats`, `tick_rate_stats`). An aggregate's definition names its keys, its
time column, its columns and the SELECT expressions computing them.

- TimescaleDB: real continuous aggregates (materialized only), refreshed with
  `CALL refresh_continuous_aggregate(...)`, which refuses to run inside a transaction
  block: pass an autocommit connection.
- Plain Postgres: rollup tables of the same name and shape, recomputed one bucket
  range at a time (delete the range's rollup rows, re-insert a GROUP BY over the
  input), in slices of one transaction each. What to recompute comes from
  `store_rollup_invalidations` (aggregate, bucket):
  * bars_ohlcv: statement-level triggers with transition tables append the buckets
    each statement touched for every aggregate of the source (migration 0005);
  * tick_data: the statement-level triggers append one row per statement and
    finest-bucket to `store_rollup_source_log` (the pipeline writes a tick per
    statement), which a refresh fans out into the invalidations of the source's root
    aggregates (migration 0014);
  * a hierarchical rollup (`parent` set, e.g. tick_agg_5m from tick_agg_1m) is
    computed from its parent's rows; every recompute of the parent invalidates the
    child's buckets it covered, and refreshing the child refreshes the parent first.
  TRUNCATE of the source is not tracked.
- Retention keeps rollups: buckets of which retention really removed raw rows are
  frozen, never recomputed from the partly dropped source by a refresh. The frozen range
  is [`frozen_from`, `last_cutoff`) of `store_retention_policies`, widened to whole
  buckets: from the oldest row any retention run removed to the cutoff of the last run
  that removed rows (a run that removed nothing moves neither). A refresh skips the
  frozen part of its window and says so in `warnings`; invalidations of frozen buckets
  are discarded. History loaded later, older than `frozen_from`, rolls up as usual. An
  explicit rebuild (`rebuild=True`) recomputes the frozen buckets too, from the raw rows
  present now, and reports how many it replaced.

A bucket that cannot be computed (a data error such as a sum out of the double's range,
from rows stored before the backfill's bounds existed) does not stop the refresh: the
slice holding it is recomputed bucket by bucket, the failing buckets are skipped, kept
invalidated, listed in the result (`failed_buckets`) and counted in the metric
`store_rollup_bucket_failures_total{aggregate}`; every other bucket refreshes.

Concurrency: refreshes of one aggregate are serialised by an advisory lock; a refresh
holds a shared advisory lock on its source that retention takes exclusively while it
moves the watermark, so no refresh straddles a watermark move.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from functools import partial
from typing import Any

import psycopg
from psycopg import sql
from psycopg.types.json import Jsonb

from app.db import scalar
from app.errors import first_line
from app.times import align, iso, utc
from app.timeseries import backend, catalog
from app.timeseries.retry import retrying

NAMES: tuple[str, ...] = catalog.AGGREGATE_NAMES
ROLLUP_LOCK = 0x4D44_5341  # advisory namespace: one refresher per aggregate ('MDSA')
WATERMARK_LOCK = 0x4D44_5357  # advisory namespace: retention watermark of a source table ('MDSW')
ORIGIN = datetime(1970, 1, 1, tzinfo=UTC)
DEFAULT_SLICE = timedelta(days=1)


class RefreshError(Exception):
    """The refresh cannot be done as asked (e.g. inside a transaction on TimescaleDB)."""


def aggregate(name: str) -> catalog.Aggregate:
    """Catalog entry; KeyError for an unknown name."""
    return catalog.ROLLUPS[name]


def names_for(source: str) -> tuple[str, ...]:
    """The aggregates over `source`, finer ones first (parents before their children)."""
    return tuple(a.name for a in catalog.ROLLUPS.values() if a.source == source)


def _children(agg: catalog.Aggregate) -> list[catalog.Aggregate]:
    return [a for a in catalog.ROLLUPS.values() if a.parent == agg.name]


def ceil_bucket(ts: datetime, width: timedelta) -> datetime:
    low = align(ts, width)
    return low if low == utc(ts) else low + width


def aligned_window(start: datetime, end: datetime, width: timedelta) -> tuple[datetime, datetime]:
    """[start, end) widened to whole buckets."""
    return align(start, width), ceil_bucket(end, width)


def watermark(conn: psycopg.Connection, table: str) -> datetime | None:
    """The source table's retention watermark: the upper end of the frozen range."""
    row = conn.execute("SELECT last_cutoff FROM store_retention_policies WHERE table_name = %s", (table,)).fetchone()
    return utc(row[0]) if row and row[0] else None


Range = tuple[datetime | None, datetime | None]  # [lo, hi), None: open end


def frozen_buckets(conn: psycopg.Connection, agg: catalog.Aggregate) -> Range | None:
    """The buckets of `agg` a refresh must not recompute, or None.

    [oldest removed row, last cutoff) of the source widened to whole buckets; an unknown
    lower end (a watermark from before `frozen_from` existed) is open."""
    row = conn.execute(
        "SELECT frozen_from, last_cutoff FROM store_retention_policies WHERE table_name = %s", (agg.source,)
    ).fetchone()
    if not row or row[1] is None:
        return None
    lo = align(utc(row[0]), agg.bucket) if row[0] is not None else None
    return lo, ceil_bucket(utc(row[1]), agg.bucket)


def _before(a: datetime | None, b: datetime | None) -> bool:
    """a < b with None as -infinity for a and +infinity for b."""
    return a is None or b is None or a < b


def unfrozen_parts(lo: datetime | None, hi: datetime | None, frozen: Range | None) -> list[Range]:
    """The parts of [lo, hi) outside the frozen range (None: open ends)."""
    if frozen is None:
        return [(lo, hi)]
    f_lo, f_hi = frozen
    parts: list[Range] = []
    if f_lo is not None and _before(lo, f_lo):
        parts.append((lo, f_lo if hi is None else min(hi, f_lo)))
    if f_hi is not None and _before(f_hi, hi):
        parts.append((f_hi if lo is None else max(lo, f_hi), hi))
    return [(a, b) for a, b in parts if _before(a, b)]


def frozen_overlap(lo: datetime, hi: datetime, frozen: Range | None) -> tuple[datetime, datetime] | None:
    """The part of [lo, hi) inside the frozen range, or None."""
    if frozen is None:
        return None
    a = lo if frozen[0] is None else max(lo, frozen[0])
    b = hi if frozen[1] is None else min(hi, frozen[1])
    return (a, b) if a < b else None


def _count_buckets(conn: psycopg.Connection, agg: catalog.Aggregate, lo: datetime, hi: datetime) -> int:
    """Distinct buckets with rollup rows in [lo, hi)."""
    return int(
        scalar(
            conn,
            sql.SQL("SELECT count(DISTINCT {c}) FROM {t} WHERE {c} >= %s AND {c} < %s").format(
                t=sql.Identifier(agg.name), c=sql.Identifier(agg.time_column)
            ),
            (lo, hi),
        )
    )


def _source_oid_lock(conn: psycopg.Connection, table: str, shared: bool, xact: bool) -> None:
    fn = {
        (True, True): "pg_advisory_xact_lock_shared",
        (True, False): "pg_advisory_lock_shared",
        (False, True): "pg_advisory_xact_lock",
        (False, False): "pg_advisory_lock",
    }[(shared, xact)]
    conn.execute(sql.SQL("SELECT {}(%s, %s::regclass::oid::int)").format(sql.Identifier(fn)), (WATERMARK_LOCK, table))


def lock_watermark(conn: psycopg.Connection, table: str) -> None:
    """Exclusive, transaction-level: taken by retention while it moves the watermark."""
    _source_oid_lock(conn, table, shared=False, xact=True)


# -- plain Postgres ----------------------------------------------------------------------
def _recompute_sql(agg: catalog.Aggregate) -> sql.Composed:
    """INSERT INTO the rollup the GROUP BY over its input ([lo, hi) of the input's time column)."""
    parent = aggregate(agg.parent) if agg.parent else None
    src = sql.Identifier(parent.name if parent else agg.source)
    src_time = sql.Identifier(parent.time_column if parent else catalog.table(agg.source).time_column)
    keys = sql.SQL(", ").join(map(sql.Identifier, agg.keys))
    where = sql.SQL(f" AND ({agg.where})") if agg.where else sql.SQL("")
    return sql.SQL(
        "INSERT INTO {agg} ({keys}, {time}, {cols}) "
        "SELECT {keys}, date_bin(%(w)s, {st}, %(origin)s), {select} FROM {src} "
        "WHERE {st} >= %(lo)s AND {st} < %(hi)s{where} GROUP BY {groups}"
    ).format(
        agg=sql.Identifier(agg.name),
        keys=keys,
        time=sql.Identifier(agg.time_column),
        cols=sql.SQL(", ").join(map(sql.Identifier, agg.columns)),
        st=src_time,
        select=sql.SQL(agg.select),  # static SQL from the catalog
        src=src,
        where=where,
        groups=sql.SQL(", ").join(sql.SQL(str(i)) for i in range(1, len(agg.keys) + 2)),
    )


def _invalidate_children(conn: psycopg.Connection, agg: catalog.Aggregate, lo: datetime, hi: datetime) -> None:
    """A recompute of [lo, hi) of `agg` changes the buckets of the rollups computed from it."""
    for child in _children(agg):
        conn.execute(
            """INSERT INTO store_rollup_invalidations (aggregate, bucket)
               SELECT %(name)s, b FROM generate_series(date_bin(%(w)s, %(lo)s::timestamptz, %(origin)s),
                                                       %(hi)s::timestamptz - interval '1 microsecond', %(w)s) b""",
            {"name": child.name, "w": child.bucket, "lo": lo, "hi": hi, "origin": ORIGIN},
        )


def _recompute_slice(
    conn: psycopg.Connection, agg: catalog.Aggregate, lo: datetime, hi: datetime, rebuild: bool = False
) -> dict:
    """One transaction: recompute the rollup rows of buckets in [lo, hi), skipping the
    frozen buckets (or, with `rebuild`, recomputing them too and counting them)."""
    ident = sql.Identifier(agg.name)
    total = {"buckets": 0, "rows_written": 0, "invalidations_cleared": 0, "frozen_buckets_replaced": 0}
    with conn.transaction():
        conn.execute("SELECT pg_advisory_xact_lock(%s, hashtext(%s))", (ROLLUP_LOCK, agg.name))
        _source_oid_lock(conn, agg.source, shared=True, xact=True)
        frozen = frozen_buckets(conn, agg)
        if rebuild:
            inside = frozen_overlap(lo, hi, frozen)
            if inside is not None:
                total["frozen_buckets_replaced"] = _count_buckets(conn, agg, *inside)
            parts: list[tuple[datetime, datetime]] = [(lo, hi)]
        else:
            parts = [(a or lo, b or hi) for a, b in unfrozen_parts(lo, hi, frozen)]
        for p_lo, p_hi in parts:
            total["invalidations_cleared"] += conn.execute(
                "DELETE FROM store_rollup_invalidations WHERE aggregate = %s AND bucket >= %s AND bucket < %s",
                (agg.name, p_lo, p_hi),
            ).rowcount
            conn.execute(
                sql.SQL("DELETE FROM {} WHERE {} >= %s AND {} < %s").format(
                    ident, sql.Identifier(agg.time_column), sql.Identifier(agg.time_column)
                ),
                (p_lo, p_hi),
            )
            total["rows_written"] += conn.execute(
                _recompute_sql(agg), {"w": agg.bucket, "origin": ORIGIN, "lo": p_lo, "hi": p_hi}
            ).rowcount
            _invalidate_children(conn, agg, p_lo, p_hi)
            total["buckets"] += int((p_hi - p_lo) / agg.bucket)
        if parts:
            conn.execute(
                """UPDATE store_aggregates SET last_refresh_at = now(),
                          watermark = greatest(watermark, %s) WHERE name = %s""",
                (hi, agg.name),
            )
    return total


def _slices(lo: datetime, hi: datetime, width: timedelta) -> Iterator[tuple[datetime, datetime]]:
    cur = lo
    while cur < hi:
        nxt = min(hi, align(cur, width) + width)
        yield cur, nxt
        cur = nxt


def _add(total: dict, part: dict) -> None:
    for key, value in part.items():
        if isinstance(value, list):  # failed_buckets: keep the first FAILED_SHOWN
            total[key] = (total.get(key) or []) + value[: FAILED_SHOWN - len(total.get(key) or [])]
        else:
            total[key] = total.get(key, 0) + value


FAILED_SHOWN = 50  # failing buckets listed in a result (all are counted)


def _pg_window(
    conn: psycopg.Connection,
    agg: catalog.Aggregate,
    lo: datetime,
    hi: datetime,
    check: Callable[[], None] | None,
    slice_width: timedelta,
    rebuild: bool = False,
) -> dict:
    total: dict[str, Any] = {"buckets": 0, "rows_written": 0, "invalidations_cleared": 0, "frozen_buckets_replaced": 0}
    failed: list[str] = []
    width = max(slice_width, agg.bucket)
    for s_lo, s_hi in _slices(lo, hi, width):
        if check is not None:
            check()
        try:
            part = retrying(
                partial(_recompute_slice, conn, agg, s_lo, s_hi, rebuild), f"refresh {agg.name}", check=check
            )
        except psycopg.errors.DataError:
            part = _bucket_by_bucket(conn, agg, s_lo, s_hi, check, failed, rebuild)
        _add(total, part)
    if failed:
        total["failed_buckets"] = failed[:FAILED_SHOWN]
        total["failed_bucket_count"] = len(failed)
    return total


def _bucket_by_bucket(
    conn: psycopg.Connection,
    agg: catalog.Aggregate,
    lo: datetime,
    hi: datetime,
    check: Callable[[], None] | None,
    failed: list[str],
    rebuild: bool = False,
) -> dict:
    """Recompute [lo, hi) one bucket per transaction; buckets that fail are skipped (they
    stay invalidated), named in `failed` and counted."""
    from app import logs, metrics

    total = {"buckets": 0, "rows_written": 0, "invalidations_cleared": 0}
    cur = align(lo, agg.bucket)
    while cur < hi:
        nxt = cur + agg.bucket
        if check is not None:
            check()
        try:
            part = retrying(
                partial(_recompute_slice, conn, agg, max(cur, lo), min(nxt, hi), rebuild),
                f"refresh {agg.name}",
                check=check,
            )
        except psycopg.errors.DataError as exc:
            failed.append(cur.isoformat())
            metrics.ROLLUP_BUCKET_FAILURES.inc(aggregate=agg.name)
            logs.get("timeseries").warning(
                "rollup bucket cannot be computed; skipped",
                aggregate=agg.name,
                bucket=cur.isoformat(),
                error=type(exc).__name__,
                detail=first_line(exc),
            )
        else:
            _add(total, part)
        cur = nxt
    return total


def _pending_runs(conn: psycopg.Connection, agg: catalog.Aggregate) -> list[tuple[datetime, datetime]]:
    """Invalidated buckets merged into contiguous [lo, hi) runs."""
    rows = conn.execute(
        """SELECT min(bucket), max(bucket) FROM (
               SELECT bucket, bucket - (row_number() OVER (ORDER BY bucket)) * %s::interval AS grp
               FROM (SELECT DISTINCT bucket FROM store_rollup_invalidations WHERE aggregate = %s) b
           ) g GROUP BY grp ORDER BY 1""",
        (agg.bucket, agg.name),
    ).fetchall()
    return [(utc(lo), utc(hi) + agg.bucket) for lo, hi in rows]


_LOGGED_SOURCES = ("tick_data",)  # sources whose triggers write store_rollup_source_log (migration 0014)


def fan_out(conn: psycopg.Connection, source: str) -> int:
    """Turn the source's statement log (tick_data) into invalidations of its root aggregates.

    One transaction; returns the log rows consumed. A no-op where there is no log.
    """
    roots = [a for a in catalog.ROLLUPS.values() if a.source == source and a.parent is None]
    if source not in _LOGGED_SOURCES or not roots or not _has_source_log(conn):
        return 0
    with conn.transaction():
        return conn.execute(
            """WITH moved AS (DELETE FROM store_rollup_source_log WHERE source = %(source)s RETURNING lo, hi),
                    spans AS (SELECT DISTINCT lo, hi FROM moved)
               INSERT INTO store_rollup_invalidations (aggregate, bucket)
               SELECT DISTINCT a.name, b
               FROM spans s
               CROSS JOIN unnest(%(names)s::text[], %(widths)s::interval[]) AS a(name, width)
               CROSS JOIN LATERAL generate_series(date_bin(a.width, s.lo, %(origin)s),
                                                  s.hi - interval '1 microsecond', a.width) AS b""",
            {
                "source": source,
                "names": [a.name for a in roots],
                "widths": [a.bucket for a in roots],
                "origin": ORIGIN,
            },
        ).rowcount


def _pg_pending(
    conn: psycopg.Connection, agg: catalog.Aggregate, check: Callable[[], None] | None, slice_width: timedelta
) -> dict:
    fan_out(conn, agg.source)
    frozen = frozen_buckets(conn, agg)
    dropped = 0
    if frozen is not None:
        dropped = conn.execute(
            """DELETE FROM store_rollup_invalidations WHERE aggregate = %s
               AND (%s::timestamptz IS NULL OR bucket >= %s) AND bucket < %s""",
            (agg.name, frozen[0], frozen[0], frozen[1]),
        ).rowcount
    runs = _pending_runs(conn, agg)
    total = {"buckets": 0, "rows_written": 0, "invalidations_cleared": 0}
    for lo, hi in runs:
        part = _pg_window(conn, agg, lo, hi, check, slice_width)
        part.pop("frozen_buckets_replaced")
        _add(total, part)
    total["invalidations_frozen_discarded"] = dropped
    total["ranges"] = len(runs)
    window = {"start": runs[0][0].isoformat(), "end": runs[-1][1].isoformat()} if runs else None
    return {"window": window, **total}


# -- TimescaleDB ---------------------------------------------------------------------------
def _require_autocommit(conn: psycopg.Connection) -> None:
    if not conn.autocommit or conn.info.transaction_status != psycopg.pq.TransactionStatus.IDLE:
        raise RefreshError(
            "refresh_continuous_aggregate cannot run inside a transaction: pass an idle autocommit connection"
        )


def _ts_refresh(
    conn: psycopg.Connection, agg: catalog.Aggregate, lo: datetime | None, hi: datetime | None, rebuild: bool = False
) -> dict:
    """CALL refresh_continuous_aggregate over the unfrozen parts of [lo, hi) (None: open
    end; `rebuild`: all of it), under the shared watermark lock."""
    _require_autocommit(conn)

    def run() -> dict:
        conn.execute("SELECT pg_advisory_lock(%s, hashtext(%s))", (ROLLUP_LOCK, agg.name))
        try:
            _source_oid_lock(conn, agg.source, shared=True, xact=False)
        except psycopg.Error:
            conn.execute("SELECT pg_advisory_unlock(%s, hashtext(%s))", (ROLLUP_LOCK, agg.name))
            raise
        try:
            frozen = frozen_buckets(conn, agg)
            replaced = 0
            if rebuild:
                parts: list[Range] = [(lo, hi)]
                inside = frozen_overlap(lo, hi, frozen) if lo is not None and hi is not None else None
                if inside is not None:
                    replaced = _count_buckets(conn, agg, *inside)
            else:
                parts = unfrozen_parts(lo, hi, frozen)
            written, buckets = 0, 0
            for p_lo, p_hi in parts:
                conn.execute(
                    "CALL refresh_continuous_aggregate(%s::regclass, %s::timestamptz, %s::timestamptz)",
                    (agg.name, p_lo, p_hi),
                )
                written += scalar(
                    conn,
                    sql.SQL(
                        "SELECT count(*) FROM {t} WHERE (%s::timestamptz IS NULL OR {c} >= %s) "
                        "AND (%s::timestamptz IS NULL OR {c} < %s)"
                    ).format(t=sql.Identifier(agg.name), c=sql.Identifier(agg.time_column)),
                    (p_lo, p_lo, p_hi, p_hi),
                )
                if p_lo is not None and p_hi is not None:
                    buckets += int((p_hi - p_lo) / agg.bucket)
            if parts:
                conn.execute("UPDATE store_aggregates SET last_refresh_at = now() WHERE name = %s", (agg.name,))
            open_ended = lo is None or hi is None
            return {
                "buckets": None if open_ended else buckets,
                "rows_written": written,
                "start": parts[0][0] if parts else None,
                "frozen_buckets_replaced": replaced,
            }
        finally:
            conn.execute("SELECT pg_advisory_unlock_shared(%s, %s::regclass::oid::int)", (WATERMARK_LOCK, agg.source))
            conn.execute("SELECT pg_advisory_unlock(%s, hashtext(%s))", (ROLLUP_LOCK, agg.name))

    return retrying(run, f"refresh {agg.name}")


def _frozen_warning(agg: catalog.Aggregate, skipped: tuple[datetime, datetime], n: int) -> str:
    return (
        f"{n} bucket(s) of {agg.name} from {skipped[0].isoformat()} to {skipped[1].isoformat()} were not "
        f"recomputed: retention removed raw rows of {agg.source} there, so they are frozen; to recompute "
        f'them from the raw rows present now, POST /refresh/aggregate with this start, end and "rebuild": true'
    )


# -- the interface -------------------------------------------------------------------------
def refresh(
    conn: psycopg.Connection,
    name: str,
    start: datetime,
    end: datetime,
    *,
    check: Callable[[], None] | None = None,
    slice_width: timedelta = DEFAULT_SLICE,
    rebuild: bool = False,
) -> dict:
    """Recompute aggregate `name` over [start, end) widened to whole buckets.

    A hierarchical rollup (plain Postgres) is recomputed from its parent, after the
    parent's pending changes are refreshed.

    `conn`: an autocommit connection (required on TimescaleDB; on plain Postgres every
    slice of `slice_width` is its own transaction, or a savepoint when `conn` is already
    inside a transaction). Safe to run concurrently with ingest and with other
    refreshes (serialised per aggregate). Returns the window refreshed, the number of
    time buckets recomputed and of rollup rows (bucket x series) written.

    Frozen buckets (see the module doc) are skipped and named in `warnings`;
    `nothing_done` is true when the whole window was frozen. With `rebuild`, they are
    recomputed from the raw rows present now and `frozen_buckets_replaced` counts them.
    """
    agg = aggregate(name)
    lo, hi = aligned_window(utc(start), utc(end), agg.bucket)
    if lo >= hi:
        raise ValueError("start must be before end")
    hyper = backend.is_hypertable(conn, agg.source)
    if agg.parent and not hyper:  # the input first: the parent's pending changes
        refresh_pending(conn, agg.parent, check=check, slice_width=slice_width)
    frozen = frozen_buckets(conn, agg)
    skipped = None if rebuild else frozen_overlap(lo, hi, frozen)
    if hyper:
        out = _ts_refresh(conn, agg, lo, hi, rebuild)
        result = {"buckets": out["buckets"], "rows_written": out["rows_written"]}
        replaced = out["frozen_buckets_replaced"]
    else:
        result = _pg_window_unfrozen(conn, agg, lo, hi, frozen, check, slice_width, rebuild)
        replaced = result.pop("frozen_buckets_replaced")
    if rebuild:
        result["frozen_buckets_replaced"] = replaced
    warnings = []
    n_skipped = 0
    if skipped is not None:
        n_skipped = int((skipped[1] - skipped[0]) / agg.bucket)
        warnings.append(_frozen_warning(agg, skipped, n_skipped))
    result["frozen_buckets_skipped"] = n_skipped
    _record(conn, agg, {"mode": "rebuild" if rebuild else "window", **result})
    return {
        "aggregate": name,
        "window": {"start": lo.isoformat(), "end": hi.isoformat()},
        "frozen_before": iso(watermark(conn, agg.source)),
        **result,
        "nothing_done": skipped == (lo, hi),
        "warnings": warnings,
    }


def _pg_window_unfrozen(
    conn: psycopg.Connection,
    agg: catalog.Aggregate,
    lo: datetime,
    hi: datetime,
    frozen: Range | None,
    check: Callable[[], None] | None,
    slice_width: timedelta,
    rebuild: bool,
) -> dict:
    """`_pg_window` over the parts of [lo, hi) outside the frozen range (all of it with
    `rebuild`); each slice re-reads the frozen range inside its own transaction."""
    parts = [(lo, hi)] if rebuild else unfrozen_parts(lo, hi, frozen)
    total = {"buckets": 0, "rows_written": 0, "invalidations_cleared": 0, "frozen_buckets_replaced": 0}
    for p_lo, p_hi in parts:
        assert p_lo is not None and p_hi is not None  # parts of a closed window are closed
        _add(total, _pg_window(conn, agg, p_lo, p_hi, check, slice_width, rebuild))
    return total


def refresh_pending(
    conn: psycopg.Connection,
    name: str,
    *,
    check: Callable[[], None] | None = None,
    slice_width: timedelta = DEFAULT_SLICE,
) -> dict:
    """Recompute only what changed since the last refresh (inserts, updates, deletes).

    Plain Postgres: the invalidated buckets (minus frozen ones). TimescaleDB: its own
    invalidation log, from the watermark on. Same connection rules as `refresh`.
    """
    agg = aggregate(name)
    hyper = backend.is_hypertable(conn, agg.source)
    if agg.parent and not hyper:  # the input first: its recomputes invalidate this rollup's buckets
        refresh_pending(conn, agg.parent, check=check, slice_width=slice_width)
    frozen = watermark(conn, agg.source)
    if hyper:
        pending = pending_invalidations(conn, name)
        out = _ts_refresh(conn, agg, None, None)
        result = {
            "window": {"start": iso(out["start"]), "end": None},
            "buckets": None,
            "rows_written": out["rows_written"],
            "invalidations_cleared": pending,
        }
    else:
        result = _pg_pending(conn, agg, check, slice_width)
    warnings = []
    discarded = result.get("invalidations_frozen_discarded") or 0
    if discarded:
        fb = frozen_buckets(conn, agg)
        lo = fb[0].isoformat() if fb and fb[0] else "the beginning"
        hi = fb[1].isoformat() if fb and fb[1] else "now"
        warnings.append(
            f"{discarded} changed bucket(s) of {name} between {lo} and {hi} were not recomputed: retention "
            f"removed raw rows of {agg.source} there, so they are frozen; to recompute them from the raw rows "
            f'present now, POST /refresh/aggregate with a start, an end and "rebuild": true'
        )
    _record(conn, agg, {"mode": "pending", **result})
    return {"aggregate": name, "frozen_before": iso(frozen), **result, "warnings": warnings}


def _record(conn: psycopg.Connection, agg: catalog.Aggregate, result: dict) -> None:
    with conn.transaction():
        conn.execute(
            "UPDATE store_aggregates SET last_refresh_at = now(), last_result = %s WHERE name = %s",
            (Jsonb(result), agg.name),
        )


def pending_invalidations(conn: psycopg.Connection, name: str) -> int | None:
    """Buckets waiting for a refresh (plain Postgres), or TimescaleDB's invalidation ranges."""
    agg = aggregate(name)
    if backend.is_hypertable(conn, agg.source):
        # Finite ranges only: TimescaleDB keeps open-ended sentinel ranges in the log.
        return int(
            scalar(
                conn,
                """SELECT (SELECT count(*) FROM _timescaledb_catalog.continuous_aggs_materialization_invalidation_log l
                       WHERE l.materialization_id = c.mat_hypertable_id
                         AND l.lowest_modified_value > -9223372036854775808
                         AND l.greatest_modified_value < 9223372036854775807)
                    + (SELECT count(*) FROM _timescaledb_catalog.continuous_aggs_hypertable_invalidation_log h
                       WHERE h.hypertable_id = c.raw_hypertable_id)
               FROM _timescaledb_catalog.continuous_agg c
               WHERE c.user_view_name = %s AND c.user_view_schema = current_schema()""",
                (name,),
            )
        )
    if agg.parent is None and agg.source in _LOGGED_SOURCES and _has_source_log(conn):
        # Also the source's statement log that no refresh has fanned out yet.
        return int(
            scalar(
                conn,
                """SELECT count(*) FROM (
                       SELECT bucket FROM store_rollup_invalidations WHERE aggregate = %(name)s
                       UNION
                       SELECT b FROM (SELECT DISTINCT lo, hi FROM store_rollup_source_log WHERE source = %(source)s) s
                       CROSS JOIN LATERAL generate_series(date_bin(%(w)s, s.lo, %(origin)s),
                                                          s.hi - interval '1 microsecond', %(w)s) AS b
                   ) u""",
                {"name": name, "source": agg.source, "w": agg.bucket, "origin": ORIGIN},
            )
        )
    return int(
        scalar(conn, "SELECT count(DISTINCT bucket) FROM store_rollup_invalidations WHERE aggregate = %s", (name,))
    )


def _has_source_log(conn: psycopg.Connection) -> bool:
    return bool(scalar(conn, "SELECT to_regclass('store_rollup_source_log') IS NOT NULL"))


def describe(conn: psycopg.Connection) -> list[dict]:
    """GET /aggregates: name, source, bucket width, backend, last refresh, watermark, pending."""
    out = []
    for row in conn.execute(
        "SELECT name, source, bucket_width, last_refresh_at, watermark, last_result FROM store_aggregates ORDER BY bucket_width, name"
    ).fetchall():
        name, source, width, last, mark, last_result = row
        ts = backend.is_hypertable(conn, source)
        if ts:
            # Never refreshed: the watermark is TimescaleDB's minimum time (4714 BC); report null.
            mark = scalar(
                conn,
                """SELECT CASE WHEN w > -210866803200000000 THEN _timescaledb_functions.to_timestamp(w) END
                   FROM (SELECT _timescaledb_functions.cagg_watermark(mat_hypertable_id) AS w
                         FROM _timescaledb_catalog.continuous_agg
                         WHERE user_view_name = %s AND user_view_schema = current_schema()) c""",
                (name,),
            )
        frozen = watermark(conn, source)
        out.append(
            {
                "name": name,
                "source": source,
                "bucket_width": width,
                "backend": backend.TIMESCALEDB if ts else backend.POSTGRES,
                "last_refresh_at": last,
                "watermark": mark,
                "frozen_before": frozen,
                "pending_invalidations": pending_invalidations(conn, name),
                "last_result": last_result,
            }
        )
    return out

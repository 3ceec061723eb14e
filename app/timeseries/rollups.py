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
- Retention keeps rollups: buckets that begin before the source table's retention
  watermark (`store_retention_policies.last_cutoff`) are frozen, never recomputed from
  the partly dropped source. A refresh window is clamped to start at the first bucket
  boundary at or after the watermark, and invalidations of frozen buckets are discarded.

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
    """The source table's retention watermark (rows before it may have been removed)."""
    row = conn.execute("SELECT last_cutoff FROM store_retention_policies WHERE table_name = %s", (table,)).fetchone()
    return utc(row[0]) if row and row[0] else None


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


def _recompute_slice(conn: psycopg.Connection, agg: catalog.Aggregate, lo: datetime, hi: datetime) -> dict:
    """One transaction: recompute the rollup rows of buckets in [lo, hi) (clamped to the watermark)."""
    ident = sql.Identifier(agg.name)
    with conn.transaction():
        conn.execute("SELECT pg_advisory_xact_lock(%s, hashtext(%s))", (ROLLUP_LOCK, agg.name))
        _source_oid_lock(conn, agg.source, shared=True, xact=True)
        frozen = watermark(conn, agg.source)
        if frozen is not None:
            lo = max(lo, ceil_bucket(frozen, agg.bucket))
        if lo >= hi:
            return {"buckets": 0, "rows_written": 0, "invalidations_cleared": 0}
        cleared = conn.execute(
            "DELETE FROM store_rollup_invalidations WHERE aggregate = %s AND bucket >= %s AND bucket < %s",
            (agg.name, lo, hi),
        ).rowcount
        conn.execute(
            sql.SQL("DELETE FROM {} WHERE {} >= %s AND {} < %s").format(
                ident, sql.Identifier(agg.time_column), sql.Identifier(agg.time_column)
            ),
            (lo, hi),
        )
        written = conn.execute(_recompute_sql(agg), {"w": agg.bucket, "origin": ORIGIN, "lo": lo, "hi": hi}).rowcount
        _invalidate_children(conn, agg, lo, hi)
        conn.execute(
            """UPDATE store_aggregates SET last_refresh_at = now(),
                      watermark = greatest(watermark, %s) WHERE name = %s""",
            (hi, agg.name),
        )
    return {"buckets": int((hi - lo) / agg.bucket), "rows_written": written, "invalidations_cleared": cleared}


def _slices(lo: datetime, hi: datetime, width: timedelta) -> Iterator[tuple[datetime, datetime]]:
    cur = lo
    while cur < hi:
        nxt = min(hi, align(cur, width) + width)
        yield cur, nxt
        cur = nxt


def _add(total: dict, part: dict) -> None:
    for key, value in part.items():
        total[key] = total.get(key, 0) + value


FAILED_SHOWN = 50  # failing buckets listed in a result (all are counted)


def _pg_window(
    conn: psycopg.Connection,
    agg: catalog.Aggregate,
    lo: datetime,
    hi: datetime,
    check: Callable[[], None] | None,
    slice_width: timedelta,
) -> dict:
    total: dict[str, Any] = {"buckets": 0, "rows_written": 0, "invalidations_cleared": 0}
    failed: list[str] = []
    width = max(slice_width, agg.bucket)
    for s_lo, s_hi in _slices(lo, hi, width):
        if check is not None:
            check()
        try:
            part = retrying(partial(_recompute_slice, conn, agg, s_lo, s_hi), f"refresh {agg.name}", check=check)
        except psycopg.errors.DataError:
            part = _bucket_by_bucket(conn, agg, s_lo, s_hi, check, failed)
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
                partial(_recompute_slice, conn, agg, max(cur, lo), min(nxt, hi)), f"refresh {agg.name}", check=check
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
    frozen = watermark(conn, agg.source)
    dropped = 0
    if frozen is not None:
        dropped = conn.execute(
            "DELETE FROM store_rollup_invalidations WHERE aggregate = %s AND bucket < %s",
            (agg.name, ceil_bucket(frozen, agg.bucket)),
        ).rowcount
    runs = _pending_runs(conn, agg)
    total = {"buckets": 0, "rows_written": 0, "invalidations_cleared": 0}
    for lo, hi in runs:
        _add(total, _pg_window(conn, agg, lo, hi, check, slice_width))
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


def _ts_refresh(conn: psycopg.Connection, agg: catalog.Aggregate, lo: datetime | None, hi: datetime | None) -> dict:
    """CALL refresh_continuous_aggregate over [lo, hi) (None: open end), under the shared watermark lock."""
    _require_autocommit(conn)

    def run() -> dict:
        conn.execute("SELECT pg_advisory_lock(%s, hashtext(%s))", (ROLLUP_LOCK, agg.name))
        try:
            _source_oid_lock(conn, agg.source, shared=True, xact=False)
        except psycopg.Error:
            conn.execute("SELECT pg_advisory_unlock(%s, hashtext(%s))", (ROLLUP_LOCK, agg.name))
            raise
        try:
            frozen = watermark(conn, agg.source)
            start = lo
            if frozen is not None:
                start = max(start, ceil_bucket(frozen, agg.bucket)) if start else ceil_bucket(frozen, agg.bucket)
            if start is not None and hi is not None and start >= hi:
                return {"buckets": 0, "rows_written": 0, "start": start, "end": hi}
            conn.execute(
                "CALL refresh_continuous_aggregate(%s::regclass, %s::timestamptz, %s::timestamptz)",
                (agg.name, start, hi),
            )
            conn.execute("UPDATE store_aggregates SET last_refresh_at = now() WHERE name = %s", (agg.name,))
            written = scalar(
                conn,
                sql.SQL(
                    "SELECT count(*) FROM {t} WHERE (%s::timestamptz IS NULL OR {c} >= %s) "
                    "AND (%s::timestamptz IS NULL OR {c} < %s)"
                ).format(t=sql.Identifier(agg.name), c=sql.Identifier(agg.time_column)),
                (start, start, hi, hi),
            )
            buckets = int((hi - start) / agg.bucket) if start and hi else None
            return {"buckets": buckets, "rows_written": written, "start": start, "end": hi}
        finally:
            conn.execute("SELECT pg_advisory_unlock_shared(%s, %s::regclass::oid::int)", (WATERMARK_LOCK, agg.source))
            conn.execute("SELECT pg_advisory_unlock(%s, hashtext(%s))", (ROLLUP_LOCK, agg.name))

    return retrying(run, f"refresh {agg.name}")


# -- the interface -------------------------------------------------------------------------
def refresh(
    conn: psycopg.Connection,
    name: str,
    start: datetime,
    end: datetime,
    *,
    check: Callable[[], None] | None = None,
    slice_width: timedelta = DEFAULT_SLICE,
) -> dict:
    """Recompute aggregate `name` over [start, end) widened to whole buckets.

    A hierarchical rollup (plain Postgres) is recomputed from its parent, after the
    parent's pending changes are refreshed.

    `conn`: an autocommit connection (required on TimescaleDB; on plain Postgres every
    slice of `slice_width` is its own transaction, or a savepoint when `conn` is already
    inside a transaction). Safe to run concurrently with ingest and with other
    refreshes (serialised per aggregate). Returns the window refreshed, the number of
    time buckets recomputed and of rollup rows (bucket x series) written.
    """
    agg = aggregate(name)
    lo, hi = aligned_window(utc(start), utc(end), agg.bucket)
    if lo >= hi:
        raise ValueError("start must be before end")
    hyper = backend.is_hypertable(conn, agg.source)
    if agg.parent and not hyper:  # the input first: the parent's pending changes
        refresh_pending(conn, agg.parent, check=check, slice_width=slice_width)
    frozen = watermark(conn, agg.source)
    if hyper:
        out = _ts_refresh(conn, agg, lo, hi)
        result = {"buckets": out["buckets"], "rows_written": out["rows_written"]}
        eff_lo = out["start"]
    else:
        result = _pg_window(conn, agg, lo, hi, check, slice_width)
        eff_lo = max(lo, ceil_bucket(frozen, agg.bucket)) if frozen else lo
    _record(conn, agg, {"mode": "window", **result})
    return {
        "aggregate": name,
        "window": {"start": min(eff_lo, hi).isoformat(), "end": hi.isoformat()},
        "frozen_before": iso(frozen),
        **result,
    }


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
    _record(conn, agg, {"mode": "pending", **result})
    return {"aggregate": name, "frozen_before": iso(frozen), **result}


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

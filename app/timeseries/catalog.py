"""The store's time-series tables and continuous aggregates: the one list of them.

Chunk (TimescaleDB) and partition (plain Postgres) widths follow the platform's tables
(docs/contracts.md, "The market-data tables"). Default retention values are documented in
docs/retention.md and can be changed with `PUT /retention/policies/<table>`. The
migrations never read this module (they are frozen history): 0003-0006 carry the same
values written out (0022 the bar rollups' source intervals), and tests/test_migrations_frozen.py checks that a migrated database
matches it. Changing an entry for existing databases takes a new migration too.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta

from app.timeseries.intervals import finer_than


@dataclass(frozen=True)
class TimeSeriesTable:
    name: str
    time_column: str
    chunk: timedelta  # hypertable chunk width / partition width
    default_retain: timedelta
    compress_after: timedelta | None = None  # TimescaleDB only
    compress_segmentby: tuple[str, ...] = ()
    compress_orderby: str = ""


@dataclass(frozen=True)
class Aggregate:
    """A rollup defined by data: what it groups by and how each column is computed.

    On plain Postgres the store recomputes a bucket with
    `SELECT <keys>, date_bin(<bucket>, <time of the input>), <select> FROM <input>
    WHERE <where> GROUP BY <keys>, 1` where the input is `source` (its `time column`)
    or, when `parent` is set, the finer rollup `parent` (its `time_column`): a
    hierarchical rollup, so a new minute of ticks never re-reads a whole day of them.
    On TimescaleDB the migration defines the same columns as a continuous aggregate on
    `source` directly (`parent` is not used there).
    """

    name: str
    source: str
    bucket: timedelta
    keys: tuple[str, ...] = ("provider", "symbol", "interval")
    time_column: str = "bucket"
    columns: tuple[str, ...] = ("open", "high", "low", "close", "volume")
    select: str = (
        "(array_agg(open ORDER BY ts))[1], max(high), min(low), (array_agg(close ORDER BY ts DESC))[1], sum(volume)"
    )
    where: str = ""
    parent: str | None = None  # plain Postgres: computed from this finer rollup instead of `source`
    refresh_every: timedelta | None = None  # refreshed this often even when REFRESH_SCHEDULE is longer


def _d(days: int) -> timedelta:
    return timedelta(days=days)


TABLES: dict[str, TimeSeriesTable] = {
    t.name: t
    for t in (
        TimeSeriesTable("bars", "ts", _d(7), _d(1825)),
        TimeSeriesTable("fundamentals", "asof", _d(90), _d(3650)),
        TimeSeriesTable("news", "published_at", _d(30), _d(730)),
        TimeSeriesTable("options_snap", "ts", _d(7), _d(365)),
        TimeSeriesTable(
            "bars_ohlcv",
            "ts",
            _d(7),
            _d(1825),
            compress_after=_d(90),
            compress_segmentby=("provider", "symbol", "interval"),
            compress_orderby="ts DESC",
        ),
        TimeSeriesTable(
            "tick_data",
            "ts",
            _d(1),
            _d(30),
            compress_after=_d(7),
            compress_segmentby=("provider", "symbol"),
            compress_orderby="ts DESC",
        ),
        TimeSeriesTable(
            "signals",
            "ts",
            _d(7),
            _d(365),
            compress_after=_d(30),
            compress_segmentby=("provider", "symbol", "name"),
            compress_orderby="ts DESC",
        ),
    )
}

_TICK_KEYS = ("provider", "symbol")
_TICK_OHLC = ("open", "high", "low", "close", "volume", "vwap", "tick_count")
# From ticks: vwap is NULL when no tick of the bucket carries a size (or the sizes sum to 0).
_TICK_OHLC_RAW = (
    "(array_agg(price ORDER BY ts))[1], max(price), min(price), (array_agg(price ORDER BY ts DESC))[1], "
    "sum(size), sum(price * size) / nullif(sum(size), 0), count(*)"
)
# From a finer tick rollup: Σ price·size is carried as vwap·volume.
_TICK_OHLC_ROLLUP = (
    "(array_agg(open ORDER BY bucket))[1], max(high), min(low), (array_agg(close ORDER BY bucket DESC))[1], "
    "sum(volume), sum(vwap * volume) / nullif(sum(volume) FILTER (WHERE vwap IS NOT NULL), 0), sum(tick_count)"
)
_MINUTE = timedelta(minutes=1)


def _finer_bars(bucket: timedelta) -> str:
    """The `where` of a bar rollup: only bars of an interval strictly finer than its bucket
    (a daily bar is not one "hourly" bucket). Migration 0022 writes the same lists out."""
    names = ", ".join(f"'{name}'" for name in finer_than(int(bucket.total_seconds())))
    return f'"interval" IN ({names})'


_HOUR, _DAY = timedelta(hours=1), timedelta(days=1)
_BAR_ROLLUPS = (
    Aggregate("bars_ohlcv_1h", "bars_ohlcv", _HOUR, where=_finer_bars(_HOUR)),
    Aggregate("bars_ohlcv_1d", "bars_ohlcv", _DAY, where=_finer_bars(_DAY)),
)
# The bar pair (migration 0005); ROLLUPS is every aggregate the store maintains.
AGGREGATES: dict[str, Aggregate] = {a.name: a for a in _BAR_ROLLUPS}

ROLLUPS: dict[str, Aggregate] = {
    a.name: a
    for a in (
        *_BAR_ROLLUPS,
        Aggregate(
            "tick_agg_1m", "tick_data", _MINUTE, _TICK_KEYS, "bucket", _TICK_OHLC, _TICK_OHLC_RAW, refresh_every=_MINUTE
        ),
        Aggregate(
            "tick_agg_5m",
            "tick_data",
            5 * _MINUTE,
            _TICK_KEYS,
            "bucket",
            _TICK_OHLC,
            _TICK_OHLC_ROLLUP,
            "",
            "tick_agg_1m",
        ),
        Aggregate(
            "tick_agg_1h",
            "tick_data",
            timedelta(hours=1),
            _TICK_KEYS,
            "bucket",
            _TICK_OHLC,
            _TICK_OHLC_ROLLUP,
            "",
            "tick_agg_5m",
        ),
        Aggregate(
            "tick_vwap_daily",
            "tick_data",
            timedelta(days=1),
            _TICK_KEYS,
            "day",
            ("vwap", "volume", "tick_count"),
            "sum(vwap * volume) / nullif(sum(volume) FILTER (WHERE vwap IS NOT NULL), 0), sum(volume), sum(tick_count)",
            "",
            "tick_agg_1h",
        ),
        Aggregate(
            "tick_spread_stats",
            "tick_data",
            5 * _MINUTE,
            _TICK_KEYS,
            "bucket",
            ("avg_spread", "min_spread", "max_spread", "avg_spread_bps"),
            "avg(ask - bid), min(ask - bid), max(ask - bid), avg((ask - bid) / nullif((ask + bid) / 2, 0) * 10000)",
            "bid IS NOT NULL AND ask IS NOT NULL",
        ),
        Aggregate(
            "tick_rate_stats",
            "tick_data",
            _MINUTE,
            _TICK_KEYS,
            "bucket",
            ("ticks_per_minute",),
            "sum(tick_count)",  # from tick_agg_1m: the same buckets, without re-reading the ticks
            parent="tick_agg_1m",
            refresh_every=_MINUTE,
        ),
    )
}
AGGREGATE_NAMES: tuple[str, ...] = tuple(ROLLUPS)

MIN_RETAIN = timedelta(hours=1)


def table(name: str) -> TimeSeriesTable:
    """The catalog entry of a time-series table; KeyError for anything else."""
    return TABLES[name]

"""The store's time-series tables and continuous aggregates: the one list of them.

Chunk (TimescaleDB) and partition (plain Postgres) widths follow the platform's tables
(docs/contracts.md, "The market-data tables"). Default retention values are documented in
docs/retention.md and can be changed with `PUT /retention/policies/<table>`. The
migrations never read this module (they are frozen history): 0003-0006 carry the same
values written out, and tests/test_migrations_frozen.py checks that a migrated database
matches it. Changing an entry for existing databases takes a new migration too.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta


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
    name: str
    source: str
    bucket: timedelta


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

AGGREGATES: dict[str, Aggregate] = {
    a.name: a
    for a in (
        Aggregate("bars_ohlcv_1h", "bars_ohlcv", timedelta(hours=1)),
        Aggregate("bars_ohlcv_1d", "bars_ohlcv", timedelta(days=1)),
    )
}
AGGREGATE_NAMES: tuple[str, ...] = tuple(AGGREGATES)

MIN_RETAIN = timedelta(hours=1)


def table(name: str) -> TimeSeriesTable:
    """The catalog entry of a time-series table; KeyError for anything else."""
    return TABLES[name]

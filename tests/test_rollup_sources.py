"""The bar rollups take only source intervals strictly finer than their bucket, on plain
Postgres and TimescaleDB: bars_ohlcv_1h from sub-hour bars, bars_ohlcv_1d from sub-day
bars (issue 10, item 5). And migration 0022, which brings a database made before that
rule to it: rollup rows of coarser sources go (frozen ones too), frozen rows of finer
sources stay, spellings renamed by 0021 are normalised in the rollups as well.
Every time is fixed, never the wall clock.
"""

from __future__ import annotations

import re
from dataclasses import replace
from datetime import UTC, datetime, timedelta

import psycopg
import pytest
from yoyo import get_backend, read_migrations

from app import migrator
from app.timeseries import catalog, rollups
from app.timeseries.intervals import CANONICAL, finer_than
from tests.support.bars import bar_series, insert_bars, reference_rollup, rollup_rows, source_rows
from tests.support.common import ROOT
from tests.support.db import make_settings
from tests.support.timescale import requires_timescaledb

HOUR, DAY = timedelta(hours=1), timedelta(days=1)
BAR_ROLLUPS = ("bars_ohlcv_1h", "bars_ohlcv_1d")
T0 = datetime(2023, 5, 1, tzinfo=UTC)
REDIS_URL = "redis://127.0.0.1:9/0"  # settings need one; migrating never connects to it
BEFORE = "0021_bar_intervals"  # the last migration before the rule
MIGRATION = ROOT / "migrations" / "0022_rollup_source_intervals.sql"
TIMESCALEDB = [pytest.mark.timescaledb, requires_timescaledb]


def _three_series(start: datetime, end: datetime) -> list[tuple]:
    """One symbol as 1-minute, hourly and daily bars of [start, end)."""
    return (
        bar_series("AAPL", start, end, timedelta(minutes=1), interval="1m")
        + bar_series("AAPL", start, end, HOUR, interval="1h")
        + bar_series("AAPL", start, end, DAY, interval="1d")
    )


# -- the rule, from the vocabulary -------------------------------------------------------------
def test_each_bar_rollup_names_the_intervals_finer_than_its_bucket_in_the_catalog_and_the_migration():
    text = MIGRATION.read_text()
    for name, bucket in (("bars_ohlcv_1h", HOUR), ("bars_ohlcv_1d", DAY)):
        finer = finer_than(int(bucket.total_seconds()))
        assert finer == tuple(n for n, s in CANONICAL.items() if s < bucket.total_seconds())
        assert catalog.ROLLUPS[name].where == '"interval" IN (' + ", ".join(f"'{n}'" for n in finer) + ")"
        listed = re.search(rf"\('{name}', interval '[^']+',\s*ARRAY\[([^\]]*)\]\)", text)
        assert listed, name
        assert tuple(re.findall(r"'([^']+)'", listed[1])) == finer, name
    assert finer_than(3600)[-1] == "30m" and finer_than(86400)[-1] == "12h"


# -- both backends, fully migrated ----------------------------------------------------------------
@pytest.fixture(params=["postgres", pytest.param("timescaledb", marks=TIMESCALEDB)])
def store(request):
    fixture = "migrated_database_url" if request.param == "postgres" else "timescale_migrated_url"
    with psycopg.connect(request.getfixturevalue(fixture), autocommit=True) as c:
        yield c


def test_minute_hourly_and_daily_bars_roll_up_only_into_coarser_buckets(store):
    conn = store
    start, end = T0, T0 + 3 * DAY
    insert_bars(conn, _three_series(start, end))
    for name in BAR_ROLLUPS:
        rollups.refresh_pending(conn, name)

    hourly, daily = rollup_rows(conn, "bars_ohlcv_1h"), rollup_rows(conn, "bars_ohlcv_1d")
    assert {k[2] for k in hourly} == {"1m"}  # no hourly or daily bar as an "hourly" bucket
    assert {k[2] for k in daily} == {"1m", "1h"}  # no daily bar as a "daily" bucket
    assert len(hourly) == 72 and len(daily) == 2 * 3
    rows = source_rows(conn)
    assert hourly == reference_rollup(rows, HOUR)
    assert daily == reference_rollup(rows, DAY)
    # each bucket equal to the GROUP BY of the finer bars alone, written out
    minutes = [r for r in rows if r[2] == "1m" and T0 + DAY <= r[3] < T0 + DAY + HOUR]
    assert hourly[("prov", "AAPL", "1m", T0 + DAY)] == (
        minutes[0][4],
        max(r[5] for r in minutes),
        min(r[6] for r in minutes),
        minutes[-1][7],
        sum(r[8] for r in minutes),
    )

    # a windowed refresh and a rebuild keep to the same sources
    for name in BAR_ROLLUPS:
        width = rollups.aggregate(name).bucket
        out = rollups.refresh(conn, name, T0 + DAY, T0 + 2 * DAY, rebuild=True)
        expected = reference_rollup(source_rows(conn), width, T0 + DAY, T0 + 2 * DAY)
        assert rollup_rows(conn, name, T0 + DAY, T0 + 2 * DAY) == expected
        assert out["rows_written"] == len(expected)


def test_a_change_to_a_coarser_bar_leaves_the_finer_rollup_alone(store):
    conn = store
    insert_bars(conn, _three_series(T0, T0 + DAY))
    for name in BAR_ROLLUPS:
        rollups.refresh_pending(conn, name)
    before = {name: rollup_rows(conn, name) for name in BAR_ROLLUPS}
    conn.execute("""UPDATE bars_ohlcv SET close = close + 1000, volume = volume + 1000 WHERE "interval" = '1d'""")
    conn.execute("""UPDATE bars_ohlcv SET high = high + 1000 WHERE "interval" = '1h' AND ts = %s""", (T0,))
    for name in BAR_ROLLUPS:
        rollups.refresh_pending(conn, name)
    assert rollup_rows(conn, "bars_ohlcv_1h") == before["bars_ohlcv_1h"]
    daily = rollup_rows(conn, "bars_ohlcv_1d")
    assert daily != before["bars_ohlcv_1d"]
    assert daily == reference_rollup(source_rows(conn), DAY)


# -- the upgrade: a database at 0021 with frozen rollup rows ------------------------------------------
def _migrate_to(url: str, last: str) -> None:
    """Apply the migrations up to `last` only, as yoyo did before 0022 existed."""
    backend = get_backend(
        migrator.yoyo_url(make_settings(url, REDIS_URL), "test-rollup-sources"),
        migration_table=migrator.MIGRATION_TABLE,
    )
    try:
        todo = read_migrations(str(migrator.MIGRATIONS_DIR)).filter(lambda m: m.id <= last)
        with backend.lock(timeout=10):
            backend.apply_migrations(backend.to_apply(todo))
    finally:
        backend.connection.close()


@pytest.fixture(params=["postgres", pytest.param("timescaledb", marks=TIMESCALEDB)])
def at_0021(request):
    """(url, hypertable?): a fresh database migrated up to 0021 only."""
    fixture = "database_url" if request.param == "postgres" else "timescale_database_url"
    url = request.getfixturevalue(fixture)
    _migrate_to(url, BEFORE)
    return url, request.param == "timescaledb"


def _rollup_storage(conn, name: str, hypertable: bool) -> str:
    """Where a rollup's rows are stored: the table, or the continuous aggregate's materialization hypertable."""
    if not hypertable:
        return f'"{name}"'
    schema, table = conn.execute(
        """SELECT materialization_hypertable_schema, materialization_hypertable_name
           FROM timescaledb_information.continuous_aggregates WHERE view_name = %s""",
        (name,),
    ).fetchone()
    return f'"{schema}"."{table}"'


def _add_rollup_row(conn, name: str, hypertable: bool, interval: str, bucket: datetime, value: float) -> None:
    conn.execute(
        f"INSERT INTO {_rollup_storage(conn, name, hypertable)} "
        '(provider, symbol, "interval", bucket, open, high, low, close, volume) '
        "VALUES ('prov', 'AAPL', %s, %s, %s, %s, %s, %s, %s)",
        (interval, bucket, value, value, value, value, value),
    )


def test_the_migration_drops_rollup_rows_of_coarser_sources_and_keeps_frozen_finer_ones(at_0021, monkeypatch):
    url, hypertable = at_0021
    frozen_hi, end = T0 + DAY, T0 + 2 * DAY
    with psycopg.connect(url, autocommit=True) as conn:
        insert_bars(conn, _three_series(T0, end))
        # The rollups as the store computed them before 0022: every interval in every bucket.
        for name in BAR_ROLLUPS:
            monkeypatch.setitem(catalog.ROLLUPS, name, replace(catalog.ROLLUPS[name], where=""))
            rollups.refresh(conn, name, T0, end)
        monkeypatch.undo()
        old = {name: rollup_rows(conn, name) for name in BAR_ROLLUPS}
        assert ("prov", "AAPL", "1d", T0) in old["bars_ohlcv_1h"]  # a daily bar as an "hourly" bucket
        assert ("prov", "AAPL", "1d", T0) in old["bars_ohlcv_1d"]

        # Frozen rows computed from spellings 0021 renamed (raw rows long gone).
        extra = T0 + 5 * HOUR
        _add_rollup_row(conn, "bars_ohlcv_1h", hypertable, "1min", T0, -1.0)  # beside '1m': the '1m' row stays
        _add_rollup_row(conn, "bars_ohlcv_1h", hypertable, "5 min", extra, 5.0)  # -> '5m'
        _add_rollup_row(conn, "bars_ohlcv_1h", hypertable, "5min", extra, -5.0)  # '5 min' sorts first: goes
        _add_rollup_row(conn, "bars_ohlcv_1h", hypertable, "1D", extra, 1.0)  # -> '1d': not a source
        _add_rollup_row(conn, "bars_ohlcv_1h", hypertable, "7x", extra, 7.0)  # no interval at all
        _add_rollup_row(conn, "bars_ohlcv_1d", hypertable, "60m", T0, 60.0)  # -> '1h', beside '1h': goes
        _add_rollup_row(conn, "bars_ohlcv_1d", hypertable, "4hr", T0, 4.0)  # -> '4h'

        # Retention removed the first day's raw rows: those buckets are frozen.
        conn.execute("DELETE FROM bars_ohlcv WHERE ts < %s", (frozen_hi,))
        conn.execute(
            "UPDATE store_retention_policies SET frozen_from = %s, last_cutoff = %s WHERE table_name = 'bars_ohlcv'",
            (T0, frozen_hi),
        )

    applied = migrator.apply(make_settings(url, REDIS_URL))["applied"]
    assert "0022_rollup_source_intervals" in applied

    with psycopg.connect(url, autocommit=True) as conn:
        migrated = {name: rollup_rows(conn, name) for name in BAR_ROLLUPS}
        for name in BAR_ROLLUPS:
            width = rollups.aggregate(name).bucket
            allowed = finer_than(int(width.total_seconds()))
            # every row left is of a source finer than the bucket; every old one of those is kept
            assert {k[2] for k in migrated[name]} <= set(allowed)
            kept = {k: v for k, v in old[name].items() if k[2] in allowed}
            assert {k: v for k, v in migrated[name].items() if k in kept} == kept
        hourly, daily = migrated["bars_ohlcv_1h"], migrated["bars_ohlcv_1d"]
        assert ("prov", "AAPL", "1d", T0) not in hourly and ("prov", "AAPL", "1d", T0) not in daily
        assert ("prov", "AAPL", "1h", T0) not in hourly and ("prov", "AAPL", "1h", T0) in daily
        assert {k: v for k, v in hourly.items() if k not in old["bars_ohlcv_1h"]} == {
            ("prov", "AAPL", "5m", extra): (5.0,) * 5
        }
        assert hourly[("prov", "AAPL", "1m", T0)] == old["bars_ohlcv_1h"][("prov", "AAPL", "1m", T0)]
        assert {k: v for k, v in daily.items() if k not in old["bars_ohlcv_1d"]} == {
            ("prov", "AAPL", "4h", T0): (4.0,) * 5
        }
        assert daily[("prov", "AAPL", "1h", T0)] == old["bars_ohlcv_1d"][("prov", "AAPL", "1h", T0)]

        # Run again (yoyo may re-apply after a kill): nothing changes.
        conn.execute("DELETE FROM _yoyo_migration WHERE migration_id = '0022_rollup_source_intervals'")
    assert migrator.apply(make_settings(url, REDIS_URL))["applied"] == ["0022_rollup_source_intervals"]

    with psycopg.connect(url, autocommit=True) as conn:
        assert {name: rollup_rows(conn, name) for name in BAR_ROLLUPS} == migrated
        # The next refresh (the scheduled one) recomputes what is not frozen; frozen rows stay.
        for name in BAR_ROLLUPS:
            rollups.refresh_pending(conn, name)
            width = rollups.aggregate(name).bucket
            after = rollup_rows(conn, name)
            assert {k: v for k, v in after.items() if k[3] < frozen_hi} == {
                k: v for k, v in migrated[name].items() if k[3] < frozen_hi
            }
            assert {k: v for k, v in after.items() if k[3] >= frozen_hi} == reference_rollup(
                source_rows(conn), width, lo=frozen_hi
            )
            if not hypertable:
                assert rollups.pending_invalidations(conn, name) == 0


def test_the_rollback_takes_every_interval_again_and_the_migration_reapplies(store, monkeypatch):
    conn = store
    insert_bars(conn, _three_series(T0, T0 + DAY))
    for name in BAR_ROLLUPS:
        rollups.refresh_pending(conn, name)
    filtered = {name: rollup_rows(conn, name) for name in BAR_ROLLUPS}

    conn.execute(MIGRATION.with_suffix("").with_suffix(".rollback.sql").read_text())
    for name in BAR_ROLLUPS:  # the code before 0022: no filter (TimescaleDB: the aggregate's own query)
        monkeypatch.setitem(catalog.ROLLUPS, name, replace(catalog.ROLLUPS[name], where=""))
        rollups.refresh_pending(conn, name)
        assert {k[2] for k in rollup_rows(conn, name)} == {"1m", "1h", "1d"}
    monkeypatch.undo()

    conn.execute(MIGRATION.read_text())
    assert {name: rollup_rows(conn, name) for name in BAR_ROLLUPS} == filtered

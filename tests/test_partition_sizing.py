"""Partitions sized to the data (app/timeseries/partitions.plan, ensure_days): years of
daily bars get yearly partitions, hourly bars monthly ones, minute bars the table's week;
wide partitions are history only and never overlap what exists; a backfill creates a
batch's partitions together and says so in its progress. Both backends."""

from __future__ import annotations

import concurrent.futures
from datetime import UTC, datetime, timedelta

import psycopg
import pytest

from app.jobs import backfill
from app.timeseries import partitions, retention, rollups
from tests.support.backfill import job_context, write_ndjson
from tests.support.bars import bar_series, insert_bars, reference_rollup, rollup_rows, source_rows
from tests.support.db import make_settings

WEEK = timedelta(days=7)
DAY = timedelta(days=1)
HOUR = timedelta(hours=1)
MINUTE = timedelta(minutes=1)
NOW = datetime(2026, 6, 17, 12, tzinfo=UTC)  # a fixed "now": no outcome depends on the date


def daily(first: datetime, last: datetime) -> list[datetime]:
    out, t = [], first
    while t <= last:
        out.append(t)
        t += DAY
    return out


def y(year: int, month: int = 1, day: int = 1) -> datetime:
    return datetime(year, month, day, tzinfo=UTC)


# -- the plan (pure) ------------------------------------------------------------------------------------
def test_daily_history_gets_one_partition_per_calendar_year():
    pieces = partitions.plan([], daily(y(2001), y(2025, 12, 31)), WEEK, DAY, NOW)
    assert pieces == [(y(year), y(year + 1)) for year in range(2001, 2026)]


def test_hourly_history_gets_calendar_months_and_minute_bars_get_weeks():
    months = partitions.plan([], [y(2020, 1, 15), y(2020, 2, 29), y(2020, 12, 31)], WEEK, HOUR, NOW)
    assert months == [(y(2020, 1), y(2020, 2)), (y(2020, 2), y(2020, 3)), (y(2020, 12), y(2021, 1))]
    weeks = partitions.plan(
        [],
        [
            y(
                2020,
                1,
                15,
            )
        ],
        WEEK,
        MINUTE,
        NOW,
    )
    assert weeks == [(partitions.align(y(2020, 1, 15), WEEK), partitions.align(y(2020, 1, 15), WEEK) + WEEK)]
    assert partitions.plan([], [y(2020, 1, 15)], WEEK, None, NOW) == weeks  # grain unknown: the table's width


def test_wide_partitions_stop_before_the_recent_weeks_which_keep_the_table_width():
    limit = partitions.horizon(NOW, WEEK)
    assert limit == partitions.align(NOW, WEEK) - WEEK
    pieces = partitions.plan([], daily(y(2026, 5, 1), y(2026, 6, 20)), WEEK, DAY, NOW)
    assert pieces[0] == (y(2026), limit)  # this year, up to the horizon
    rest = pieces[1:]
    assert rest and all(partitions.own_chunk(lo, hi, WEEK) for lo, hi in rest)
    assert rest[0][0] == limit and rest[-1][1] > y(2026, 6, 20)


def test_a_wide_partition_fills_only_the_free_parts_of_its_year():
    taken = [
        partitions.Partition("w1", partitions.align(y(2010, 3, 3), WEEK), partitions.align(y(2010, 3, 3), WEEK) + WEEK)
    ]
    pieces = partitions.plan(taken, daily(y(2010, 1, 1), y(2010, 12, 31)), WEEK, DAY, NOW)
    assert pieces == [(y(2010), taken[0].lo), (taken[0].hi, y(2011))]
    assert (
        partitions.plan(taken + [partitions.Partition("", a, b) for a, b in pieces], [y(2010, 7, 1)], WEEK, DAY, NOW)
        == []
    )


def test_only_the_slots_with_rows_get_partitions():
    assert partitions.plan([], [y(1990, 5, 5), y(2004, 2, 2)], WEEK, DAY, NOW) == [
        (y(1990), y(1991)),
        (y(2004), y(2005)),
    ]


# -- creating them (plain Postgres) -------------------------------------------------------------------------------
def test_ensure_days_creates_the_plan_in_groups_and_reports_progress(conn):
    seen: list[tuple[int, int]] = []
    starts = daily(y(1980), y(2019, 12, 31))[::5]
    made = partitions.ensure_days(
        conn, "bars_ohlcv", starts, grain=DAY, now=NOW, progress=lambda n, m: seen.append((n, m))
    )
    assert made == 40
    parts = [p for p in partitions.list_partitions(conn, "bars_ohlcv") if p.lo < y(2020)]
    assert [(p.lo, p.hi) for p in parts] == [(y(year), y(year + 1)) for year in range(1980, 2020)]
    assert seen[0] == (0, 40) and seen[-1] == (40, 40)
    assert len(seen) == 1 + -(-40 // partitions.GROUP)  # one report per transaction
    assert partitions.ensure_days(conn, "bars_ohlcv", starts, grain=DAY, now=NOW) == 0
    # rows of those years land in them, none in DEFAULT
    insert_bars(conn, [("p", "X", "1d", t, 1, 1, 1, 1, 1) for t in starts[:200]])
    assert conn.execute("SELECT count(*) FROM bars_ohlcv_default").fetchone()[0] == 0


def test_rows_already_in_default_move_into_a_new_wide_partition(conn):
    old = [("p", "OLD", "1d", t, 1, 1, 1, 1, 1) for t in daily(y(1995, 3, 1), y(1995, 3, 31))]
    insert_bars(conn, old)
    assert conn.execute("SELECT count(*) FROM bars_ohlcv_default").fetchone()[0] == len(old)
    assert partitions.ensure_days(conn, "bars_ohlcv", [y(1995, 6, 1)], grain=DAY, now=NOW) == 1
    assert conn.execute("SELECT count(*) FROM bars_ohlcv_default").fetchone()[0] == 0
    assert conn.execute("SELECT count(*) FROM bars_ohlcv_p19950101").fetchone()[0] == len(old)


def test_the_limit_counts_wide_partitions_and_creates_nothing_past_it(conn):
    before = partitions.list_partitions(conn, "bars_ohlcv")
    with pytest.raises(partitions.TooManyPartitions) as caught:
        partitions.ensure_days(conn, "bars_ohlcv", [y(year, 6) for year in range(1950, 1960)], grain=DAY, max_new=5)
    assert caught.value.needed == 10
    assert partitions.list_partitions(conn, "bars_ohlcv") == before


def test_concurrent_loads_of_the_same_years_create_each_partition_once(migrated_database_url):
    starts = daily(y(1960), y(1979, 12, 31))[::7]

    def work(_):
        with psycopg.connect(migrated_database_url, autocommit=True) as c:
            return partitions.ensure_days(c, "bars_ohlcv", starts, grain=DAY, now=NOW)

    with concurrent.futures.ThreadPoolExecutor(4) as pool:
        created = list(pool.map(work, range(4)))
    with psycopg.connect(migrated_database_url, autocommit=True) as c:
        parts = [p for p in partitions.list_partitions(c, "bars_ohlcv") if p.lo < y(1980)]
    assert sum(created) == len(parts) == 20
    assert all(b.lo == a.hi for a, b in zip(parts, parts[1:], strict=False))


# -- a backfill ---------------------------------------------------------------------------------------------
def test_a_backfill_of_daily_history_makes_yearly_partitions_and_shows_the_phase(
    migrated_database_url, redis_url, tmp_path
):
    settings = make_settings(migrated_database_url, redis_url, BACKFILL_SOURCE_DIR=tmp_path)
    rows = [
        {
            "provider": "stooq",
            "symbol": sym,
            "interval": "1d",
            "ts": t.strftime("%Y-%m-%dT00:00:00Z"),
            "open": 10.0,
            "high": 11.0,
            "low": 9.0,
            "close": 10.5,
            "volume": 100.0,
        }
        for sym in ("AAA", "BBB")
        for t in daily(y(2000), y(2011, 12, 31))
        if t.weekday() < 5
    ]
    write_ndjson(tmp_path / "daily.ndjson", rows)
    ctx = job_context(settings)
    seen: list[dict] = []
    publish = ctx.progress

    def record(**fields):
        seen.append(dict(fields))
        publish(**fields)

    ctx.progress = record  # type: ignore[method-assign]
    params = backfill.parse_bars({"source": "daily.ndjson", "batch_rows": 2000}, settings)
    result = backfill.run_bars(ctx, params)
    assert result["rows_written"] == len(rows)
    assert result["partitions_created"] == 12
    creating = [f for f in seen if f.get("phase") == "creating partitions"]
    # the first batch (AAA's first 2,000 days) needs 8 years, the second the other 4
    assert [(f["partitions_created"], f["partitions_needed"]) for f in creating] == [(0, 8), (8, 8), (8, 12), (12, 12)]
    first_loading = next(i for i, f in enumerate(seen) if f.get("phase") == "loading")
    assert seen.index(creating[0]) < first_loading
    with psycopg.connect(migrated_database_url) as c:
        parts = [p for p in partitions.list_partitions(c, "bars_ohlcv") if p.lo < y(2012)]
        assert [(p.lo, p.hi) for p in parts] == [(y(year), y(year + 1)) for year in range(2000, 2012)]
        assert c.execute("SELECT count(*) FROM bars_ohlcv_default").fetchone()[0] == 0


# -- TimescaleDB ------------------------------------------------------------------------------------------
@pytest.mark.timescaledb
def test_timescaledb_gets_yearly_chunks_for_daily_history_and_keeps_its_own_weeks(timescale_migrated_url):
    with psycopg.connect(timescale_migrated_url, autocommit=True) as c:
        starts = daily(y(2001), y(2010, 12, 31))
        assert partitions.ensure_days(c, "bars_ohlcv", starts, grain=DAY, now=NOW) == 10
        assert partitions.ensure_days(c, "bars_ohlcv", starts, grain=DAY, now=NOW) == 0
        # minute bars: TimescaleDB makes its own chunks as rows arrive
        assert partitions.ensure_days(c, "bars_ohlcv", [y(2024, 3, 4)], grain=MINUTE, now=NOW) == 0
        insert_bars(c, [("p", "X", "1d", t, 1, 1, 1, 1, 1) for t in starts])
        insert_bars(c, [("p", "X", "1m", y(2024, 3, 4) + i * MINUTE, 1, 1, 1, 1, 1) for i in range(10)])
        ranges = sorted((lo, hi) for _n, lo, hi in ((p.name, p.lo, p.hi) for p in partitions.chunks(c, "bars_ohlcv")))
        assert ranges[:10] == [(y(year), y(year + 1)) for year in range(2001, 2011)]
        assert len(ranges) == 11 and ranges[10][1] - ranges[10][0] == WEEK
        assert c.execute("SELECT count(*) FROM bars_ohlcv").fetchone()[0] == len(starts) + 10


@pytest.mark.timescaledb
def test_timescaledb_retention_cuts_a_compressed_yearly_chunk_exactly(timescale_migrated_url):
    """The chunk straddling the cutoff is compressed and holds more rows than TimescaleDB lets
    one DML transaction decompress (the limit is lowered to 100 here; its default, 100,000,
    is less than a yearly chunk of daily bars for 500 symbols): retention still removes
    exactly the rows older than the cutoff."""
    from app.timeseries import retention

    with psycopg.connect(timescale_migrated_url, autocommit=True) as c:
        db = c.info.dbname
        c.execute(f'ALTER DATABASE "{db}" SET timescaledb.max_tuples_decompressed_per_dml_transaction = 100')
    with psycopg.connect(timescale_migrated_url, autocommit=True) as c:
        days = daily(y(2015), y(2022, 12, 31))
        assert partitions.ensure_days(c, "bars_ohlcv", days, grain=DAY, now=NOW) == 8
        insert_bars(c, [("p", f"S{s}", "1d", t, 1, 1, 1, 1, 1) for s in range(3) for t in days])
        compressed = c.execute(
            "SELECT count(compress_chunk(ch)) FROM show_chunks('bars_ohlcv', older_than => %s::timestamptz) ch",
            (y(2023),),
        ).fetchone()[0]
        assert compressed == 8
        # retain 5 years: the cutoff (2019-03-03) falls early in the 2019 chunk, so its older
        # rows are deleted (more rows are newer than older: no trim)
        now = y(2024, 3, 1)
        cutoff = now - timedelta(days=1825)
        older = c.execute("SELECT count(*) FROM bars_ohlcv WHERE ts < %s", (cutoff,)).fetchone()[0]
        total = c.execute("SELECT count(*) FROM bars_ohlcv").fetchone()[0]
        result = retention.apply_table(c, "bars_ohlcv", now=now)
        assert result["rows_removed"] == older and result["dropped"] == 4  # 2015-2018 whole
        assert c.execute("SELECT count(*), min(ts) FROM bars_ohlcv").fetchone() == (total - older, cutoff)
        assert (y(2019), y(2020)) in [(p.lo, p.hi) for p in partitions.chunks(c, "bars_ohlcv")]


@pytest.mark.parametrize("backend", ["postgres", pytest.param("timescaledb", marks=pytest.mark.timescaledb)])
def test_retention_trims_a_yearly_partition_mostly_older_than_the_cutoff_and_rollups_stay_exact(backend, request):
    """Daily bars 2015-2022 in yearly partitions (compressed chunks on TimescaleDB) and a
    month of hourly bars across the cutoff (2019-11-03, 5 years before 2024-11-01): the 2019
    partition holds more rows older than the cutoff than newer, so its newer rows are kept
    in a new partition from the cutoff's day and the old one is dropped whole. Exactly the
    older rows go; the daily rollup keeps its frozen buckets and equals a GROUP BY after."""
    url = request.getfixturevalue("migrated_database_url" if backend == "postgres" else "timescale_migrated_url")
    with psycopg.connect(url, autocommit=True) as c:
        days = daily(y(2015), y(2022, 12, 31))
        assert partitions.ensure_days(c, "bars_ohlcv", days, grain=DAY, now=NOW) == 8
        rows = [
            ("p", f"S{s}", "1d", t, float(s), float(s + 2), float(s - 1), float(s + 1), 1.0)
            for s in range(3)
            for t in days
        ]
        rows += bar_series("H", y(2019, 10, 20), y(2019, 11, 20), HOUR, interval="1h")
        insert_bars(c, rows)
        for name in rollups.names_for("bars_ohlcv"):
            rollups.refresh_pending(c, name)
        before = rollup_rows(c, "bars_ohlcv_1d")
        if backend == "timescaledb":
            c.execute(
                "SELECT count(compress_chunk(ch)) FROM show_chunks('bars_ohlcv', older_than => %s::timestamptz) ch",
                (y(2023),),
            )
        now = y(2024, 11, 1)
        cutoff = now - timedelta(days=1825)
        assert cutoff == y(2019, 11, 3)
        seen: list[dict] = []
        result = retention.apply_table(c, "bars_ohlcv", now=now, progress=lambda **kw: seen.append(kw))
        kept = [r for r in rows if r[3] >= cutoff]
        assert result["rows_removed"] == len(rows) - len(kept) and result["dropped"] == 4  # 2015-2018 whole
        assert sorted(source_rows(c)) == sorted(kept)
        ranges = [(p.lo, p.hi) for p in partitions.existing(c, "bars_ohlcv")]
        assert (y(2019, 11, 3), y(2020)) in ranges and not [r for r in ranges if r[0] < cutoff]
        if backend == "postgres":  # the new partition has every index of the table (built by ATTACH)
            new = next(p.name for p in partitions.list_partitions(c, "bars_ohlcv") if p.lo == cutoff.replace(hour=0))
            indexes = "SELECT count(*) FILTER (WHERE indisvalid) FROM pg_index WHERE indrelid = %s::regclass"
            assert c.execute(indexes, (new,)).fetchone()[0] == c.execute(indexes, ("bars_ohlcv",)).fetchone()[0] >= 2
        assert any(kw["phase"].startswith("trimming") for kw in seen)
        width = rollups.aggregate("bars_ohlcv_1d").bucket
        frozen_end = rollups.ceil_bucket(cutoff, width)
        rollups.refresh_pending(c, "bars_ohlcv_1d")
        rollups.refresh(c, "bars_ohlcv_1d", y(2019, 10, 1), y(2019, 12, 1))
        after = rollup_rows(c, "bars_ohlcv_1d")
        frozen = {k: v for k, v in before.items() if k[3] < frozen_end}
        assert frozen and {k: v for k, v in after.items() if k[3] < frozen_end} == frozen
        newer = {k: v for k, v in after.items() if k[3] >= frozen_end}
        assert newer and newer == reference_rollup(source_rows(c), width, lo=frozen_end)


def test_a_dry_run_lists_the_sized_partitions_a_load_would_make(migrated_database_url, redis_url, tmp_path):
    settings = make_settings(migrated_database_url, redis_url, BACKFILL_SOURCE_DIR=tmp_path)
    bar = {"provider": "p", "symbol": "D", "open": 1.0, "high": 1.0, "low": 1.0, "close": 1.0, "volume": 1.0}
    rows = [{**bar, "interval": "1d", "ts": f"{year}-06-0{k}T00:00:00Z"} for year in (1999, 2003) for k in (1, 2)]
    write_ndjson(tmp_path / "d.ndjson", rows)
    params = backfill.parse_bars({"source": "d.ndjson", "dry_run": True}, settings)
    result = backfill.run_bars(job_context(settings), params)
    assert result["partitions_to_create"] == [
        {"from": "1999-01-01T00:00:00+00:00", "to": "2000-01-01T00:00:00+00:00"},
        {"from": "2003-01-01T00:00:00+00:00", "to": "2004-01-01T00:00:00+00:00"},
    ]
    with psycopg.connect(migrated_database_url) as c:
        assert not [p for p in partitions.list_partitions(c, "bars_ohlcv") if p.lo.year in (1999, 2003)]

"""Rollups that include loaded history, on plain Postgres and TimescaleDB.

Only buckets of which retention really removed raw rows are frozen: a retention run on an
empty table freezes nothing, so decades of history loaded afterwards roll up; history
older than anything retention removed rolls up too; an explicit rebuild recomputes the
frozen buckets of its window from the raw rows present now and says how many it replaced.
Every run is reckoned from a fixed "now", never from the wall clock.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import psycopg
import pytest

from app.intervals import in_words
from app.jobs import aggregates as aggregates_job
from app.jobs.base import JobError
from app.times import align
from app.timeseries import partitions, retention, rollups
from tests.support.bars import bar_series, insert_bars, reference_rollup, rollup_rows, source_rows
from tests.support.timescale import requires_timescaledb

pytestmark = pytest.mark.slow  # years of history per test, on both backends

DAY = timedelta(days=1)
BAR_ROLLUPS = ("bars_ohlcv_1h", "bars_ohlcv_1d")
NOW = datetime(2024, 3, 15, 10, 0, tzinfo=UTC)
BACKENDS = [
    pytest.param("postgres", id="postgres"),
    pytest.param("timescaledb", id="timescaledb", marks=[pytest.mark.timescaledb, requires_timescaledb]),
]


@pytest.fixture(params=BACKENDS)
def store(request):
    fixture = "migrated_database_url" if request.param == "postgres" else "timescale_migrated_url"
    with psycopg.connect(request.getfixturevalue(fixture), autocommit=True) as c:
        yield c


def _policy(conn):
    return conn.execute(
        "SELECT frozen_from, last_cutoff FROM store_retention_policies WHERE table_name = 'bars_ohlcv'"
    ).fetchone()


def test_retention_on_an_empty_table_freezes_nothing_and_ten_years_of_history_roll_up(store):
    conn = store
    retention.set_policy(conn, "bars_ohlcv", timedelta(days=1825), True)
    result = retention.apply_table(conn, "bars_ohlcv", now=NOW)
    assert result["rows_removed"] == 0
    assert _policy(conn) == (None, None)  # a run that removed nothing moves no watermark

    # A decade of 12-hour bars (sources of the daily rollup) beside daily bars (not: a
    # rollup takes only intervals finer than its bucket).
    start, end = datetime(2004, 1, 1, tzinfo=UTC), datetime(2014, 1, 1, tzinfo=UTC)
    rows = bar_series("AAPL", start, end, DAY / 2, interval="12h") + bar_series(
        "MSFT", start, end, DAY / 2, provider="other", interval="12h"
    )
    insert_bars(conn, rows + bar_series("AAPL", start, end, DAY, interval="1d"))
    out = rollups.refresh_pending(conn, "bars_ohlcv_1d")
    assert out["warnings"] == []
    got = rollup_rows(conn, "bars_ohlcv_1d")
    assert len({k[3] for k in got}) == (end - start).days  # every daily bucket of the decade
    assert {k[2] for k in got} == {"12h"}
    assert got == reference_rollup(source_rows(conn), DAY)


def test_rebuild_recomputes_frozen_buckets_from_reloaded_history_and_counts_them(store):
    conn = store
    partitions.ensure_range(conn, "bars_ohlcv", NOW - 60 * DAY, NOW)
    rows = bar_series("AAPL", NOW - 60 * DAY, NOW, timedelta(hours=1)) + bar_series(
        "MSFT", NOW - 60 * DAY, NOW, timedelta(hours=2), provider="other"
    )
    insert_bars(conn, rows)
    for name in BAR_ROLLUPS:
        rollups.refresh_pending(conn, name)
    before = {name: rollup_rows(conn, name) for name in BAR_ROLLUPS}
    retention.set_policy(conn, "bars_ohlcv", timedelta(days=30), True)
    result = retention.apply_table(conn, "bars_ohlcv", now=NOW)
    cutoff = datetime.fromisoformat(result["cutoff"])
    assert result["rows_removed"] > 0
    assert _policy(conn) == (NOW - 60 * DAY, cutoff)  # frozen: from the oldest removed row to the cutoff

    # History reloaded inside the frozen range, and history older than anything removed.
    lo, hi = NOW - 46 * DAY, NOW - 39 * DAY
    reloaded = [r for r in rows if lo <= r[3] < hi] + bar_series("IBM", lo, hi, timedelta(minutes=30))
    older = bar_series("IBM", NOW - 400 * DAY, NOW - 390 * DAY, timedelta(hours=3))
    partitions.ensure_range(conn, "bars_ohlcv", NOW - 400 * DAY, NOW - 390 * DAY)
    insert_bars(conn, reloaded + older)

    for name in BAR_ROLLUPS:
        width = rollups.aggregate(name).bucket
        frozen_lo, frozen_hi = align(NOW - 60 * DAY, width), rollups.ceil_bucket(cutoff, width)
        # A refresh rolls up the older history and leaves the frozen buckets alone, saying so.
        out = rollups.refresh(conn, name, NOW - 400 * DAY, NOW)
        assert out["frozen_buckets_skipped"] == (frozen_hi - frozen_lo) / width and not out["nothing_done"]
        assert "rebuild" in out["warnings"][0]
        after = rollup_rows(conn, name)
        assert {k: v for k, v in after.items() if frozen_lo <= k[3] < frozen_hi} == {
            k: v for k, v in before[name].items() if frozen_lo <= k[3] < frozen_hi
        }
        assert {k: v for k, v in after.items() if k[3] < frozen_lo} == reference_rollup(older, width)
        # A window entirely frozen: nothing done, and the job would fail saying why.
        inside = rollups.refresh(conn, name, frozen_lo, frozen_hi)
        assert inside["nothing_done"] and inside["rows_written"] == 0
        with pytest.raises(JobError, match="nothing was refreshed.*rebuild"):
            aggregates_job.outcome({name: inside})

        # The explicit rebuild recomputes exactly the window's buckets from the rows present now.
        w_lo, w_hi = rollups.aligned_window(lo, hi, width)
        replaced = len({k[3] for k in before[name] if w_lo <= k[3] < w_hi})
        out = rollups.refresh(conn, name, lo, hi, rebuild=True)
        assert out["frozen_buckets_replaced"] == replaced > 0 and out["warnings"] == []
        rebuilt = rollup_rows(conn, name)
        assert {k: v for k, v in rebuilt.items() if w_lo <= k[3] < w_hi} == reference_rollup(
            source_rows(conn), width, lo=w_lo, hi=w_hi
        )
        outside = {k: v for k, v in after.items() if not w_lo <= k[3] < w_hi}
        assert {k: v for k, v in rebuilt.items() if not w_lo <= k[3] < w_hi} == outside


def test_the_retention_warning_says_the_policy_in_words():
    assert in_words(timedelta(days=1825)) == "5 years"
    assert in_words(timedelta(days=365)) == "1 year"
    assert in_words(timedelta(days=30)) == "30 days"
    assert in_words(timedelta(hours=12)) == "12 hours"


def test_a_rebuild_needs_a_window_and_a_boolean():
    from app.errors import BadRequest

    window = {"name": "bars_ohlcv_1d", "start": "2020-01-01T00:00:00Z", "end": "2021-01-01T00:00:00Z"}
    assert aggregates_job.parse({**window, "rebuild": True}, None)["rebuild"] is True
    assert aggregates_job.parse(window, None)["rebuild"] is False
    with pytest.raises(BadRequest, match="rebuild must be true or false"):
        aggregates_job.parse({**window, "rebuild": "yes"}, None)
    with pytest.raises(BadRequest, match="rebuild needs a start and an end"):
        aggregates_job.parse({"name": "bars_ohlcv_1d", "start": "2020-01-01T00:00:00Z", "rebuild": True}, None)

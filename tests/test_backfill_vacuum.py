"""A backfill leaves what it loaded at rest: it VACUUMs the partitions (chunks) it wrote.

On both backends: a decade of daily bars lands in yearly partitions (chunks); when the
job reports success, exactly those holding its rows have been vacuumed: all their pages
are in the visibility map, so a retention run counts them from an index and readers set
no hint bits. A partition another session holds is skipped, not waited for.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import psycopg
import pytest

from app.jobs import backfill
from app.timeseries import vacuum
from tests.support.backfill import job_context, write_ndjson
from tests.support.db import make_settings
from tests.support.timescale import requires_timescaledb

START = datetime(2004, 1, 2, tzinfo=UTC)
SYMBOLS = ("AAA", "BBB")


def daily(years: int, start: datetime = START) -> list[dict]:
    """Weekday daily bars over `years` years, symbol after symbol (as vendors ship history)."""
    out = []
    for symbol in SYMBOLS:
        day = start
        while day < start.replace(year=start.year + years):
            if day.weekday() < 5:
                out.append(
                    {
                        "provider": "vendor",
                        "symbol": symbol,
                        "interval": "1d",
                        "ts": day.strftime("%Y-%m-%dT%H:%M:%SZ"),
                        "open": 10.0,
                        "high": 11.0,
                        "low": 9.5,
                        "close": 10.5,
                        "volume": 1000.0,
                    }
                )
            day += timedelta(days=1)
    return out


PARAMS = {
    "source": "history.ndjson",
    "format": "ndjson",
    "max_bad_rows": 0,
    "batch_rows": 1000,
    "provider": None,
    "interval": None,
}


def tables_holding_rows(conn: psycopg.Connection) -> dict[str, tuple[int, int]]:
    """Each partition (chunk) of bars_ohlcv with rows: (relpages, relallvisible)."""
    rows = conn.execute(
        """SELECT c.oid::regclass::text, c.relpages, c.relallvisible
           FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid
           WHERE i.inhparent = 'bars_ohlcv'::regclass"""
    ).fetchall()
    out = {}
    for name, pages, visible in rows:
        if conn.execute(f"SELECT EXISTS (SELECT FROM {name})").fetchone()[0]:
            out[name] = (pages, visible)
    return out


def load_and_check(url: str, redis_url: str, tmp_path) -> None:
    settings = make_settings(url, redis_url, BACKFILL_SOURCE_DIR=tmp_path)
    rows = daily(10)
    write_ndjson(tmp_path / "history.ndjson", rows)
    result = backfill.run_bars(job_context(settings), dict(PARAMS))
    assert result["rows_written"] == len(rows)
    with psycopg.connect(url, autocommit=True) as conn:
        holding = tables_holding_rows(conn)
    assert len(holding) >= 10  # a decade of yearly partitions (chunks)
    assert result["vacuumed"] == {"tables": len(holding), "skipped": []}
    assert not [w for w in result["warnings"] if "vacuum" in w]
    for name, (pages, visible) in holding.items():
        assert pages > 0 and visible == pages, f"{name} not at rest: {visible} of {pages} pages all-visible"

    # the same file again: nothing written, nothing to vacuum
    again = backfill.run_bars(job_context(settings), dict(PARAMS))
    assert again["rows_written"] == 0 and again["vacuumed"] == {"tables": 0, "skipped": []}


def test_a_loaded_decade_is_at_rest_when_the_job_ends(migrated_database_url, redis_url, tmp_path):
    load_and_check(migrated_database_url, redis_url, tmp_path)


@pytest.mark.timescaledb
@requires_timescaledb
def test_a_loaded_decade_is_at_rest_when_the_job_ends_on_timescaledb(timescale_migrated_url, redis_url, tmp_path):
    load_and_check(timescale_migrated_url, redis_url, tmp_path)


def test_a_partition_another_session_holds_is_skipped_not_waited_for(migrated_database_url, redis_url, tmp_path):
    settings = make_settings(migrated_database_url, redis_url, BACKFILL_SOURCE_DIR=tmp_path)
    write_ndjson(tmp_path / "history.ndjson", daily(2))
    first = backfill.run_bars(job_context(settings), dict(PARAMS))
    assert first["vacuumed"]["tables"] >= 2
    # the same two years with new closes: every row changes, so both partitions are written again
    write_ndjson(tmp_path / "history.ndjson", [{**r, "close": 10.75} for r in daily(2)])
    with psycopg.connect(migrated_database_url) as holder:
        with psycopg.connect(migrated_database_url, autocommit=True) as conn:
            names = [i.as_string(conn) for i in vacuum.tables_for(conn, "bars_ohlcv", [START])]
        held = names[0].strip('"')
        # what a running VACUUM, ANALYZE or CREATE INDEX holds: conflicts with VACUUM, not with writers
        holder.execute(f'LOCK TABLE "{held}" IN SHARE UPDATE EXCLUSIVE MODE')
        result = backfill.run_bars(job_context(settings), dict(PARAMS))
        holder.rollback()
    assert result["rows_written"] == first["rows_written"]
    assert result["vacuumed"]["tables"] == first["vacuumed"]["tables"] - 1
    assert len(result["vacuumed"]["skipped"]) == 1 and held in result["vacuumed"]["skipped"][0]
    assert "lock not available" in result["vacuumed"]["skipped"][0]
    assert not [w for w in result["warnings"] if "vacuum" in w]  # left to autovacuum: the load is complete


def test_tables_for_picks_the_partitions_of_the_given_days_only(migrated_database_url):
    from app.timeseries import partitions

    with psycopg.connect(migrated_database_url, autocommit=True) as conn:
        lo = datetime(2010, 1, 1, tzinfo=UTC)
        for year in (2010, 2011, 2013):  # 2012 has none
            partitions.create(conn, "bars_ohlcv", [(lo.replace(year=year), lo.replace(year=year + 1))])
        days = [datetime(2010, 6, 1, tzinfo=UTC), datetime(2012, 6, 1, tzinfo=UTC), datetime(2013, 12, 31, tzinfo=UTC)]
        picked = [i.as_string(conn) for i in vacuum.tables_for(conn, "bars_ohlcv", days)]
    assert picked == ['"bars_ohlcv_p20100101"', '"bars_ohlcv_p20130101"']

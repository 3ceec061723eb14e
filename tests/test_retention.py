"""Retention on plain Postgres, driven directly: what is removed, what is kept, how it yields.

Every run is reckoned from a fixed "now" (`NOW`, passed to `apply_table`), never from the
wall clock, so the partition layout, the cutoff and every figure are the same on every
day of the week and at every time of day.
"""

from __future__ import annotations

import threading
from datetime import UTC, datetime, timedelta

import psycopg
import pytest

from app.timeseries import partitions, retention, rollups
from tests.support.bars import bar_series, insert_bars, reference_rollup, rollup_rows, source_rows
from tests.support.common import wait_for

UTC = UTC
DAY = timedelta(days=1)
# A Friday morning: 60 days back is Monday 2024-01-15, inside the weekly partition
# [Thu 2024-01-11, Thu 2024-01-18); the 30-day cutoff is 2024-02-14 10:00, inside
# [Thu 2024-02-08, Thu 2024-02-15). Far from the partitions the migration premade
# around the real date, so only the ones made here hold rows.
NOW = datetime(2024, 3, 15, 10, 0, tzinfo=UTC)


def _load_60_days(conn, step=timedelta(hours=1)):
    """60 days of bars up to NOW, in partitions from the first row on; policy: 30 days.

    The partitions a run at NOW premakes exist already (as they would in a store that has
    been running), so retention's first DDL on the table is dropping the old partitions.
    """
    now = NOW
    partitions.ensure_range(conn, "bars_ohlcv", now - 60 * DAY, now)
    partitions.premake(conn, "bars_ohlcv", now)
    rows = bar_series("AAPL", now - 60 * DAY, now, step) + bar_series(
        "MSFT", now - 60 * DAY, now, step * 2, provider="other"
    )
    insert_bars(conn, rows)
    retention.set_policy(conn, "bars_ohlcv", timedelta(days=30), True)
    return rows


def test_removes_every_row_older_than_the_cutoff_dropping_whole_partitions(conn):
    rows = _load_60_days(conn)
    seen = []
    result = retention.apply_table(conn, "bars_ohlcv", batch_rows=50, progress=lambda **kw: seen.append(kw), now=NOW)
    cutoff = datetime.fromisoformat(result["cutoff"])
    assert cutoff == NOW - 30 * DAY
    older = [r for r in rows if r[3] < cutoff]
    assert result["rows_removed"] == len(older) > 0
    assert conn.execute("SELECT count(*) FROM bars_ohlcv WHERE ts < %s", (cutoff,)).fetchone()[0] == 0
    assert conn.execute("SELECT count(*) FROM bars_ohlcv").fetchone()[0] == len(rows) - len(older)
    # whole partitions went; only the one straddling the cutoff was deleted from
    left = partitions.list_partitions(conn, "bars_ohlcv")
    assert all(p.hi > cutoff for p in left)
    assert result["dropped"] == len(result["dropped_names"]) >= 3
    assert not set(result["dropped_names"]) & {p.name for p in left}
    # The partition straddling the cutoff, [Thu 02-08, Thu 02-15), held more rows older
    # than the cutoff (Wed 02-14 10:00) than newer: its newer rows were kept in a new
    # partition from the cutoff's day, and the old one was dropped whole.
    assert (left[0].lo, left[0].hi) == (datetime(2024, 2, 14, tzinfo=UTC), datetime(2024, 2, 15, tzinfo=UTC))
    assert "trimming the partition straddling the cutoff" in [kw["phase"] for kw in seen]
    assert sorted(source_rows(conn)) == sorted(r for r in rows if r[3] >= cutoff)
    policy = retention.get_policy(conn, "bars_ohlcv")
    assert policy["watermark"] == result["cutoff"] and policy["last_applied_at"]
    assert policy["last_result"]["rows_removed"] == result["rows_removed"]


def test_a_partition_mostly_newer_than_the_cutoff_is_deleted_from_in_bounded_batches(conn):
    rows = _load_60_days(conn)
    # 34 days: the cutoff (Sat 02-10 10:00) is early in [Thu 02-08, Thu 02-15), so
    # deleting its 58 older hours costs less than copying its 110 newer ones.
    retention.set_policy(conn, "bars_ohlcv", timedelta(days=34), True)
    seen = []
    result = retention.apply_table(conn, "bars_ohlcv", batch_rows=50, progress=lambda **kw: seen.append(kw), now=NOW)
    cutoff = datetime.fromisoformat(result["cutoff"])
    assert cutoff == datetime(2024, 2, 10, 10, tzinfo=UTC)
    older = [r for r in rows if r[3] < cutoff]
    assert result["rows_removed"] == len(older)
    left = partitions.list_partitions(conn, "bars_ohlcv")
    assert (left[0].lo, left[0].hi) == (datetime(2024, 2, 8, tzinfo=UTC), datetime(2024, 2, 15, tzinfo=UTC))
    deleted_batches = [kw for kw in seen if kw["phase"] == "deleting"]
    assert len(deleted_batches) > 2  # bounded batches of 50 rows
    assert sorted(source_rows(conn)) == sorted(r for r in rows if r[3] >= cutoff)


def test_dry_run_reports_the_same_figures_and_changes_nothing(conn):
    _load_60_days(conn)
    names = [p.name for p in partitions.list_partitions(conn, "bars_ohlcv")]
    count = conn.execute("SELECT count(*) FROM bars_ohlcv").fetchone()[0]
    dry = retention.apply_table(conn, "bars_ohlcv", dry_run=True, now=NOW)
    assert dry["dry_run"] is True and dry["rows_removed"] > 0
    assert [p.name for p in partitions.list_partitions(conn, "bars_ohlcv")] == names
    assert conn.execute("SELECT count(*) FROM bars_ohlcv").fetchone()[0] == count
    assert retention.get_policy(conn, "bars_ohlcv")["watermark"] is None
    real = retention.apply_table(conn, "bars_ohlcv", now=NOW)
    assert (real["rows_removed"], real["dropped_names"]) == (dry["rows_removed"], dry["dropped_names"])


def test_a_disabled_policy_removes_nothing_but_still_sweeps_the_default_partition(conn):
    _load_60_days(conn)
    insert_bars(
        conn, bar_series("OLD", datetime(1999, 1, 1, tzinfo=UTC), datetime(1999, 1, 2, tzinfo=UTC), timedelta(hours=1))
    )
    retention.set_policy(conn, "bars_ohlcv", timedelta(days=30), False)
    count = conn.execute("SELECT count(*) FROM bars_ohlcv").fetchone()[0]
    result = retention.apply_table(conn, "bars_ohlcv", now=NOW)
    assert result["skipped"] == "policy disabled" and result["rows_moved_from_default"] == 24
    assert conn.execute("SELECT count(*) FROM bars_ohlcv").fetchone()[0] == count
    assert conn.execute("SELECT count(*) FROM bars_ohlcv_default").fetchone()[0] == 0
    # PUT without `enabled` keeps it disabled; a short retention still applies only when enabled
    assert retention.set_policy(conn, "bars_ohlcv", timedelta(hours=1), None)["enabled"] is False


def test_rows_in_the_default_partition_are_deleted_or_moved_into_partitions(conn):
    now = NOW
    ancient = bar_series("OLD", datetime(1999, 1, 1, tzinfo=UTC), datetime(1999, 1, 3, tzinfo=UTC), timedelta(hours=1))
    recent = bar_series("NEW", now - 20 * DAY, now - 19 * DAY, timedelta(hours=1))  # no partition yet
    insert_bars(conn, ancient + recent)
    assert conn.execute("SELECT count(*) FROM bars_ohlcv_default").fetchone()[0] == len(ancient + recent)
    retention.set_policy(conn, "bars_ohlcv", timedelta(days=30), True)
    result = retention.apply_table(conn, "bars_ohlcv", now=NOW)
    assert result["rows_removed"] == len(ancient)
    assert result["rows_moved_from_default"] == len(recent) and result["partitions_created"] >= 1
    assert conn.execute("SELECT count(*) FROM bars_ohlcv_default").fetchone()[0] == 0
    assert conn.execute("SELECT count(*) FROM bars_ohlcv WHERE symbol = 'NEW'").fetchone()[0] == len(recent)


def test_a_partition_left_detached_by_a_crashed_run_is_dropped_and_counted(conn):
    rows = _load_60_days(conn)
    oldest = partitions.list_partitions(conn, "bars_ohlcv")[0]
    assert (oldest.lo, oldest.hi) == (datetime(2024, 1, 11, tzinfo=UTC), datetime(2024, 1, 18, tzinfo=UTC))
    in_oldest = sum(1 for r in rows if oldest.lo <= r[3] < oldest.hi)
    assert in_oldest == (24 * 3 - 10) + (12 * 3 - 5)  # Mon 10:00 to Thu 00:00, hourly AAPL, 2-hourly MSFT
    retired = partitions.retire(conn, "bars_ohlcv", oldest.name)  # ... and the run died here
    assert partitions.retired_tables(conn, "bars_ohlcv") == [retired]
    result = retention.apply_table(conn, "bars_ohlcv", now=NOW)
    assert partitions.retired_tables(conn, "bars_ohlcv") == []
    cutoff = datetime.fromisoformat(result["cutoff"])
    assert result["rows_removed"] == sum(1 for r in rows if r[3] < cutoff)
    assert retired in result["dropped_names"]


def test_a_second_run_on_the_same_table_is_skipped(conn, migrated_database_url):
    _load_60_days(conn)
    with psycopg.connect(migrated_database_url, autocommit=True) as other:
        other.execute("SELECT pg_advisory_lock(%s, 'bars_ohlcv'::regclass::oid::int)", (retention.RUN_LOCK,))
        assert "another retention run" in retention.apply_table(conn, "bars_ohlcv", now=NOW)["skipped"]


@pytest.mark.slow  # several seconds: a property test or many processes
def test_rollups_over_dropped_ranges_are_kept_and_never_recomputed(conn):
    rows = _load_60_days(conn)
    for name in rollups.names_for("bars_ohlcv"):
        rollups.refresh_pending(conn, name)
    before = {name: rollup_rows(conn, name) for name in rollups.names_for("bars_ohlcv")}
    result = retention.apply_table(conn, "bars_ohlcv", now=NOW)
    cutoff = datetime.fromisoformat(result["cutoff"])
    # late writes below the watermark (a re-delivered old bar, a delete) must not touch frozen buckets
    insert_bars(conn, [("prov", "AAPL", "1m", cutoff - 3 * DAY + timedelta(minutes=1), 1e6, 1e6, 1e6, 1e6, 1e6)])
    conn.execute("DELETE FROM bars_ohlcv WHERE ts < %s", (cutoff + timedelta(hours=2),))
    for name in rollups.names_for("bars_ohlcv"):
        width = rollups.aggregate(name).bucket
        rollups.refresh_pending(conn, name)
        out = rollups.refresh(conn, name, cutoff - 90 * DAY, cutoff + 90 * DAY)  # also an explicit window
        frozen_end = rollups.ceil_bucket(cutoff, width)
        assert out["frozen_buckets_skipped"] > 0 and "rebuild" in out["warnings"][0]
        after = rollup_rows(conn, name)
        kept = {k: v for k, v in before[name].items() if k[3] < frozen_end}
        assert kept and {k: v for k, v in after.items() if k[3] < frozen_end} == kept
        # after the watermark the rollup is exactly the GROUP BY of what is left
        assert {k: v for k, v in after.items() if k[3] >= frozen_end} == reference_rollup(
            source_rows(conn), width, lo=frozen_end
        )
    assert len(rows) > 0


@pytest.mark.parametrize("session_lock_timeout", ["300", "0"])  # 0: no limit; DDL still caps its waits (at 1.5 s)
def test_retention_gives_way_to_ingest_on_lock_timeouts_and_retries(migrated_database_url, conn, session_lock_timeout):
    rows = _load_60_days(conn)
    reader = psycopg.connect(migrated_database_url)  # a long report holding ACCESS SHARE on the table
    reader.execute("SELECT count(*) FROM bars_ohlcv").fetchone()
    outcome: dict = {}

    def run_retention():
        with psycopg.connect(
            migrated_database_url,
            autocommit=True,
            application_name="retention-under-test",
            options=f"-c lock_timeout={session_lock_timeout}",
        ) as c:
            outcome["result"] = retention.apply_table(c, "bars_ohlcv", now=NOW)

    def ingest():
        with psycopg.connect(migrated_database_url, autocommit=True) as c:
            insert_bars(c, [("live", "AAPL", "1m", NOW - timedelta(minutes=1), 1, 1, 1, 1, 1)])
        outcome["ingested"] = True

    worker = threading.Thread(target=run_retention)
    worker.start()
    try:
        wait_for(
            lambda: conn.execute(
                """SELECT count(*) FROM pg_stat_activity WHERE application_name = 'retention-under-test'
               AND wait_event_type = 'Lock' AND query ILIKE '%%DETACH%%'"""
            ).fetchone()[0],
            20,
            message="retention to wait for the parent lock",
        )
        writer = threading.Thread(target=ingest)
        writer.start()
        # retention's lock request times out and lets the insert through while the report still runs
        wait_for(lambda: outcome.get("ingested"), 20, message="the insert to get past the waiting retention")
        assert reader.info.transaction_status == psycopg.pq.TransactionStatus.INTRANS
        assert "result" not in outcome
        writer.join(5)
    finally:
        reader.commit()
        reader.close()
        worker.join(60)
    cutoff = datetime.fromisoformat(outcome["result"]["cutoff"])
    assert outcome["result"]["rows_removed"] == sum(1 for r in rows if r[3] < cutoff)


def test_partition_row_counts_are_exact_before_and_after_vacuum_marks_them_all_visible(conn):
    _load_60_days(conn)
    name = partitions.list_partitions(conn, "bars_ohlcv")[1].name
    exact = f"SELECT count(*) FROM {name}"
    assert partitions.count_rows(conn, name) == conn.execute(exact).fetchone()[0] > 0
    conn.execute(f"VACUUM (ANALYZE) {name}")
    pages, visible = conn.execute("SELECT relpages, relallvisible FROM pg_class WHERE relname = %s", (name,)).fetchone()
    assert 0 < pages == visible  # counted from the index from now on
    assert partitions.count_rows(conn, name) == conn.execute(exact).fetchone()[0]
    assert conn.execute("SHOW enable_seqscan").fetchone()[0] == "on"  # the session's settings are back
    # rows added since the VACUUM (the catalogue still says all-visible) are counted too
    lo = partitions.list_partitions(conn, "bars_ohlcv")[1].lo
    insert_bars(conn, bar_series("NEW", lo, lo + DAY, timedelta(minutes=1)))
    assert partitions.count_rows(conn, name) == conn.execute(exact).fetchone()[0]


def test_partitions_are_counted_together_exactly_whether_at_rest_or_not(conn):
    _load_60_days(conn)
    settings = "SELECT current_setting('enable_seqscan'), current_setting('enable_bitmapscan'), current_setting('jit')"
    before = conn.execute(settings).fetchone()
    names = [p.name for p in partitions.list_partitions(conn, "bars_ohlcv")[1:4]]
    exact = sum(conn.execute(f"SELECT count(*) FROM {n}").fetchone()[0] for n in names)
    assert exact > 0
    assert partitions.count_many(conn, [(None, n) for n in names]) == exact
    conn.execute(f"VACUUM (ANALYZE) {names[0]}")  # one counted from its index, the others scanned
    assert partitions.count_many(conn, [(None, n) for n in names]) == exact
    assert partitions.count_many(conn, []) == 0
    assert conn.execute(settings).fetchone() == before  # the session's settings are back

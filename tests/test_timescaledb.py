"""The same interface on TimescaleDB: hypertables, compression, continuous aggregates, retention.

Runs on a throwaway cluster with shared_preload_libraries=timescaledb (see
tests/support/timescale.py); skipped where timescaledb.so is not installed.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta

import psycopg
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from app.timeseries import backend, partitions, retention, rollups
from tests.support.bars import bar_series, insert_bars, reference_rollup, rollup_rows, source_rows
from tests.support.platform import CHUNKS, TIME_COLUMNS
from tests.support.rollup_ops import BASE, apply_op, check_refresh, ops
from tests.support.timescale import requires_timescaledb

pytestmark = [pytest.mark.timescaledb, requires_timescaledb]
UTC = UTC
DAY = timedelta(days=1)


@pytest.fixture
def conn(timescale_migrated_url):
    with psycopg.connect(timescale_migrated_url, autocommit=True) as c:
        yield c


def test_time_series_tables_are_hypertables_with_the_contract_chunks_and_compression(conn):
    # The store installs the extension at the version the server ships (never an older
    # one pinned somewhere), and it is a 2.x release, the line the store is written for.
    version = backend.timescaledb_version(conn)
    shipped = conn.execute("SELECT default_version FROM pg_available_extensions WHERE name = 'timescaledb'").fetchone()[
        0
    ]
    assert version == shipped and re.fullmatch(r"2\.\d+\.\d+", version), (version, shipped)
    chunks = dict(
        conn.execute(
            """SELECT hypertable_name, time_interval FROM timescaledb_information.dimensions
           WHERE hypertable_schema = 'public'"""
        ).fetchall()
    )
    assert chunks == CHUNKS
    columns = dict(
        conn.execute(
            "SELECT hypertable_name, column_name FROM timescaledb_information.dimensions "
            "WHERE hypertable_schema = 'public'"
        ).fetchall()
    )
    assert columns == TIME_COLUMNS
    settings_ = {
        r[0]: (r[1], r[2])
        for r in conn.execute(
            "SELECT hypertable::text, segmentby, orderby FROM timescaledb_information.hypertable_compression_settings"
        )
    }
    assert settings_["bars_ohlcv"] == ("provider,symbol,interval", "ts DESC")
    assert settings_["signals"] == ("provider,symbol,name", "ts DESC")
    assert settings_["tick_data"] == ("provider,symbol", "ts DESC")
    policies = {
        r[0]: r[1]
        for r in conn.execute(
            """SELECT hypertable_name, config->>'compress_after' FROM timescaledb_information.jobs
           WHERE proc_name = 'policy_compression'"""
        )
    }
    assert policies == {"bars_ohlcv": "90 days", "signals": "30 days", "tick_data": "7 days"}
    assert {t: backend.table_backend(conn, t) for t in CHUNKS} == dict.fromkeys(CHUNKS, backend.TIMESCALEDB)
    # no store-managed partitions or triggers on this backend
    assert (
        partitions.ensure_range(conn, "bars_ohlcv", datetime(2000, 1, 1, tzinfo=UTC), datetime(2001, 1, 1, tzinfo=UTC))
        == 0
    )
    assert conn.execute("SELECT to_regclass('store_rollup_invalidations')").fetchone()[0] is None


def test_aggregates_are_real_continuous_aggregates(conn):
    rows = conn.execute("""SELECT view_name, materialized_only FROM timescaledb_information.continuous_aggregates
                           ORDER BY view_name""").fetchall()
    assert rows == sorted((name, True) for name in rollups.NAMES)
    conn.execute("BEGIN")
    with pytest.raises(rollups.RefreshError):
        rollups.refresh(conn, "bars_ohlcv_1h", BASE, BASE + DAY)
    conn.execute("ROLLBACK")


def _reset(conn):
    conn.execute("DELETE FROM bars_ohlcv")
    for name in rollups.names_for("bars_ohlcv"):
        conn.execute("CALL refresh_continuous_aggregate(%s, NULL, NULL)", (name,))


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(steps=st.lists(ops, min_size=1, max_size=10))
def test_after_any_refresh_the_continuous_aggregate_equals_a_group_by(conn, steps):
    _reset(conn)
    for op in steps:
        if op[0] in ("pending", "window"):
            check_refresh(conn, op)
        else:
            try:
                apply_op(conn, op)
            except psycopg.errors.CheckViolation:
                # TimescaleDB refuses an UPDATE of the time column that moves a row into
                # another chunk (the pipeline deletes and re-inserts instead).
                assert op[0] == "move"
    for name in rollups.names_for("bars_ohlcv"):
        check_refresh(conn, ("pending", name))


def test_retention_drops_chunks_deletes_in_a_compressed_straddling_chunk_and_keeps_rollups(conn):
    # "now" is the start of the current epoch-aligned week (a chunk boundary) and is passed to
    # retention: the rows' layout in chunks, the cutoff and every figure below are the same
    # whatever the date and time of day. It stays near the real date on purpose: the
    # compression policy's background job (after 90 days, by the real clock) never touches
    # these rows while the test runs.
    week = timedelta(days=7)
    now = partitions.align(datetime.now(UTC), week)
    rows = bar_series("AAPL", now - 60 * DAY, now, timedelta(hours=1)) + bar_series(
        "MSFT", now - 60 * DAY, now, timedelta(hours=3), provider="other"
    )
    insert_bars(conn, rows)
    for name in rollups.names_for("bars_ohlcv"):
        rollups.refresh_pending(conn, name)
    before = {name: rollup_rows(conn, name) for name in rollups.names_for("bars_ohlcv")}
    compressed = conn.execute(
        "SELECT count(compress_chunk(c)) FROM show_chunks('bars_ohlcv', older_than => %s) c", (now - 20 * DAY,)
    ).fetchone()[0]
    # rows from now-60d to now lie in the nine weekly chunks [now-63d, now-56d) .. [now-7d, now);
    # the six ending by now-20d are compressed, the one the cutoff will straddle included
    assert compressed == 6
    # 33 days: the cutoff is early in the compressed chunk [now-35d, now-28d), so its older
    # rows are deleted in it (with more of them than newer, retention would trim it instead)
    retention.set_policy(conn, "bars_ohlcv", timedelta(days=33), True)
    dry = retention.apply_table(conn, "bars_ohlcv", dry_run=True, now=now)
    assert conn.execute("SELECT count(*) FROM bars_ohlcv").fetchone()[0] == len(rows)
    result = retention.apply_table(conn, "bars_ohlcv", batch_rows=100, now=now)
    cutoff = datetime.fromisoformat(result["cutoff"])
    assert cutoff == now - 33 * DAY  # inside the compressed chunk [now-35d, now-28d)
    assert (now - 35 * DAY, now - 28 * DAY) in [(c.lo, c.hi) for c in partitions.chunks(conn, "bars_ohlcv")]
    # the four chunks [now-63d, now-56d) .. [now-42d, now-35d) end before the cutoff: dropped
    assert result["backend"] == "timescaledb" and result["dropped"] == 4
    assert result["rows_removed"] == sum(1 for r in rows if r[3] < cutoff)
    assert dry["rows_removed"] == result["rows_removed"] and len(dry["dropped_names"]) == result["dropped"]
    assert conn.execute("SELECT count(*) FROM bars_ohlcv WHERE ts < %s", (cutoff,)).fetchone()[0] == 0
    assert conn.execute("SELECT count(*) FROM bars_ohlcv").fetchone()[0] == sum(1 for r in rows if r[3] >= cutoff)
    for name in rollups.names_for("bars_ohlcv"):
        width = rollups.aggregate(name).bucket
        rollups.refresh_pending(conn, name)
        out = rollups.refresh(conn, name, cutoff - 90 * DAY, now + DAY)
        frozen_end = rollups.ceil_bucket(cutoff, width)
        assert out["frozen_buckets_skipped"] > 0 and "rebuild" in out["warnings"][0]
        after = rollup_rows(conn, name)
        kept = {k: v for k, v in before[name].items() if k[3] < frozen_end}
        assert kept and {k: v for k, v in after.items() if k[3] < frozen_end} == kept
        assert {k: v for k, v in after.items() if k[3] >= frozen_end} == reference_rollup(
            source_rows(conn), width, lo=frozen_end
        )


def test_the_service_api_on_timescaledb(timescale_migrated_url, service_factory):
    svc = service_factory(timescale_migrated_url)
    with psycopg.connect(timescale_migrated_url, autocommit=True) as c:
        insert_bars(c, bar_series("AAPL", BASE, BASE + 2 * DAY, timedelta(minutes=10)))
    policies = svc.get("/retention/policies").json()["policies"]
    assert {p["backend"] for p in policies} == {"timescaledb"}
    resp = svc.get("/aggregates")
    assert resp.status_code == 200, [l for l in svc.logs().splitlines() if "rror" in l][-3:]
    docs = {d["name"]: d for d in resp.json()["aggregates"]}
    assert {d["backend"] for d in docs.values()} == {"timescaledb"}
    refreshed = svc.run_job("/refresh/aggregate", {})["result"]["aggregates"]
    assert refreshed["bars_ohlcv_1h"]["rows_written"] == 48 and refreshed["bars_ohlcv_1d"]["rows_written"] == 2
    window = svc.run_job(
        "/refresh/aggregate", {"name": "bars_ohlcv_1d", "start": "2024-01-01T12:00:00Z", "end": "2024-01-02T00:00:00Z"}
    )["result"]["aggregates"]
    assert window["bars_ohlcv_1d"]["window"] == {"start": BASE.isoformat(), "end": (BASE + DAY).isoformat()}
    docs = {d["name"]: d for d in svc.get("/aggregates").json()["aggregates"]}
    assert docs["bars_ohlcv_1h"]["watermark"] == (BASE + 2 * DAY).isoformat()
    assert svc.put("/retention/policies/bars_ohlcv", {"retain": "30 days"}).status_code == 200
    applied = svc.run_job("/retention/apply", {"table": "bars_ohlcv"})["result"]["tables"]["bars_ohlcv"]
    assert applied["rows_removed"] == 288 and applied["backend"] == "timescaledb"
    with psycopg.connect(timescale_migrated_url, autocommit=True) as c:
        assert c.execute("SELECT count(*) FROM bars_ohlcv").fetchone()[0] == 0
        assert c.execute("SELECT count(*) FROM bars_ohlcv_1h").fetchone()[0] == 48  # rollups kept

"""The same interface on TimescaleDB: hypertables, compression, continuous aggregates, retention.

Runs on a throwaway cluster with shared_preload_libraries=timescaledb (see
tests/timescale_cluster.py); skipped where timescaledb.so is not installed.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import psycopg
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from test_aggregates import BASE, _apply, _check_refresh, ops
from timescale_cluster import (  # noqa: F401
    bar_series,
    insert_bars,
    reference_rollup,
    requires_timescaledb,
    rollup_rows,
    source_rows,
    timescale_cluster,
    timescale_database_url,
    timescale_migrated_url,
)

from app.timeseries import backend, catalog, partitions, retention, rollups

pytestmark = [pytest.mark.timescaledb, requires_timescaledb]
UTC = UTC
DAY = timedelta(days=1)


@pytest.fixture
def conn(timescale_migrated_url):
    with psycopg.connect(timescale_migrated_url, autocommit=True) as c:
        yield c


def test_time_series_tables_are_hypertables_with_the_contract_chunks_and_compression(conn):
    assert backend.timescaledb_version(conn) == "2.28.3" or backend.timescaledb_version(conn)
    chunks = dict(
        conn.execute(
            """SELECT hypertable_name, time_interval FROM timescaledb_information.dimensions
           WHERE hypertable_schema = 'public'"""
        ).fetchall()
    )
    assert chunks == {t.name: t.chunk for t in catalog.TABLES.values()}
    columns = dict(
        conn.execute(
            "SELECT hypertable_name, column_name FROM timescaledb_information.dimensions "
            "WHERE hypertable_schema = 'public'"
        ).fetchall()
    )
    assert columns == {t.name: t.time_column for t in catalog.TABLES.values()}
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
    assert all(backend.table_backend(conn, t) == backend.TIMESCALEDB for t in catalog.TABLES)
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
            _check_refresh(conn, op)
        else:
            try:
                _apply(conn, op)
            except psycopg.errors.CheckViolation:
                # TimescaleDB refuses an UPDATE of the time column that moves a row into
                # another chunk (the pipeline deletes and re-inserts instead).
                assert op[0] == "move"
    for name in rollups.names_for("bars_ohlcv"):
        _check_refresh(conn, ("pending", name))


def test_retention_drops_chunks_deletes_in_a_compressed_straddling_chunk_and_keeps_rollups(conn):
    now = datetime.now(UTC).replace(minute=0, second=0, microsecond=0)
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
    assert compressed >= 5  # includes the chunk that straddles the 30-day cutoff
    retention.set_policy(conn, "bars_ohlcv", timedelta(days=30), True)
    dry = retention.apply_table(conn, "bars_ohlcv", dry_run=True)
    assert conn.execute("SELECT count(*) FROM bars_ohlcv").fetchone()[0] == len(rows)
    result = retention.apply_table(conn, "bars_ohlcv", batch_rows=100)
    cutoff = datetime.fromisoformat(result["cutoff"])
    assert result["backend"] == "timescaledb" and result["dropped"] >= 3
    assert result["rows_removed"] == sum(1 for r in rows if r[3] < cutoff)
    assert dry["rows_removed"] == result["rows_removed"] and len(dry["dropped_names"]) == result["dropped"]
    assert conn.execute("SELECT count(*) FROM bars_ohlcv WHERE ts < %s", (cutoff,)).fetchone()[0] == 0
    assert conn.execute("SELECT count(*) FROM bars_ohlcv").fetchone()[0] == sum(1 for r in rows if r[3] >= cutoff)
    for name in rollups.names_for("bars_ohlcv"):
        width = rollups.aggregate(name).bucket
        rollups.refresh_pending(conn, name)
        out = rollups.refresh(conn, name, cutoff - 90 * DAY, now + DAY)
        frozen_end = rollups.ceil_bucket(cutoff, width)
        assert out["window"]["start"] == frozen_end.isoformat()
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

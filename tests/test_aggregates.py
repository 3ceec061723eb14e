"""Rollups on plain Postgres: after any refresh the rollup equals a GROUP BY over the source.

Property-based (hypothesis): random sequences of inserts, upserts, updates (also moving
rows between buckets), deletes and refreshes (pending or windowed); after every refresh
the refreshed buckets must equal a GROUP BY computed in Python from the source rows.
"""

from __future__ import annotations

import threading
from datetime import timedelta

import psycopg
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from app.timeseries import partitions, rollups
from tests.support.bars import bar_series, insert_bars, reference_rollup, rollup_rows, source_rows
from tests.support.rollup_ops import BASE, apply_op, check_refresh, ops


@pytest.fixture
def conn(migrated_database_url):
    with psycopg.connect(migrated_database_url, autocommit=True) as c:
        partitions.ensure_range(c, "bars_ohlcv", BASE, BASE + timedelta(days=1, hours=12))
        yield c


def _reset(conn):
    conn.execute("TRUNCATE bars_ohlcv, bars_ohlcv_1h, bars_ohlcv_1d, store_rollup_invalidations")
    conn.execute("UPDATE store_aggregates SET watermark = NULL, last_refresh_at = NULL")


@pytest.mark.slow  # several seconds: a property test or many processes
@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(steps=st.lists(ops, min_size=1, max_size=14))
def test_after_any_refresh_the_rollup_equals_a_group_by_over_the_source(conn, steps):
    _reset(conn)
    for op in steps:
        if op[0] in ("pending", "window"):
            check_refresh(conn, op)
        else:
            apply_op(conn, op)
    for name in rollups.names_for("bars_ohlcv"):  # and the pending refresh always catches up completely
        check_refresh(conn, ("pending", name))


def _xmins(conn, name) -> dict:
    return {
        tuple(r[:4]): r[4] for r in conn.execute(f'SELECT provider, symbol, "interval", bucket, xmin::text FROM {name}')
    }


@pytest.mark.slow  # several seconds: a property test or many processes
def test_a_refresh_recomputes_only_the_changed_buckets_never_the_history(conn):
    start = BASE - timedelta(days=20)
    partitions.ensure_range(conn, "bars_ohlcv", start, BASE + timedelta(days=10))
    insert_bars(
        conn,
        bar_series("AAPL", start, BASE + timedelta(days=10), timedelta(minutes=5))
        + bar_series("MSFT", start, BASE + timedelta(days=10), timedelta(minutes=15)),
    )
    for name in rollups.names_for("bars_ohlcv"):
        rollups.refresh_pending(conn, name)
    before = {name: _xmins(conn, name) for name in rollups.names_for("bars_ohlcv")}
    late = BASE + timedelta(days=2, hours=3, minutes=7)  # an hour with no AAPL bar at :07 yet
    insert_bars(conn, [("prov", "AAPL", "1m", late, 1, 2, 0, 1, 5)])
    conn.execute(
        "UPDATE bars_ohlcv SET close = 0 WHERE symbol = 'MSFT' AND ts = %s", (BASE + timedelta(days=5, hours=1),)
    )
    conn.execute("DELETE FROM bars_ohlcv WHERE symbol = 'AAPL' AND ts = %s", (BASE - timedelta(days=7, hours=-4),))
    changed_hours = {
        partitions.align(t, timedelta(hours=1))
        for t in (late, BASE + timedelta(days=5, hours=1), BASE - timedelta(days=7, hours=-4))
    }
    out = rollups.refresh_pending(conn, "bars_ohlcv_1h")
    assert out["buckets"] == 3 and out["ranges"] == 3
    after = _xmins(conn, "bars_ohlcv_1h")
    rewritten = {k[3] for k, x in after.items() if before["bars_ohlcv_1h"].get(k) != x}
    assert rewritten == changed_hours
    out = rollups.refresh_pending(conn, "bars_ohlcv_1d")
    assert out["buckets"] == 3
    assert rollup_rows(conn, "bars_ohlcv_1h") == reference_rollup(source_rows(conn), timedelta(hours=1))
    assert rollup_rows(conn, "bars_ohlcv_1d") == reference_rollup(source_rows(conn), timedelta(days=1))


def test_a_window_refresh_leaves_buckets_outside_the_window_alone(conn):
    insert_bars(conn, bar_series("AAPL", BASE, BASE + timedelta(days=2), timedelta(minutes=10)))
    rollups.refresh_pending(conn, "bars_ohlcv_1h")
    before = _xmins(conn, "bars_ohlcv_1h")
    out = rollups.refresh(
        conn, "bars_ohlcv_1h", BASE + timedelta(hours=5, minutes=30), BASE + timedelta(hours=8, minutes=1)
    )
    assert out["window"] == {
        "start": (BASE + timedelta(hours=5)).isoformat(),
        "end": (BASE + timedelta(hours=9)).isoformat(),
    }
    assert out["buckets"] == 4 and out["rows_written"] == 4
    after = _xmins(conn, "bars_ohlcv_1h")
    assert {k[3] for k, x in after.items() if before[k] != x} == {BASE + timedelta(hours=h) for h in (5, 6, 7, 8)}
    with pytest.raises(ValueError):
        rollups.refresh(conn, "bars_ohlcv_1h", BASE, BASE)
    with pytest.raises(KeyError):
        rollups.refresh(conn, "bars_ohlcv_5m", BASE, BASE + timedelta(hours=1))


def test_concurrent_ingest_and_refreshes_converge(migrated_database_url, conn):
    errors = []

    def ingest(symbol):
        try:
            with psycopg.connect(migrated_database_url, autocommit=True) as c:
                for day in range(3):
                    insert_bars(
                        c,
                        bar_series(
                            symbol, BASE + timedelta(days=day), BASE + timedelta(days=day + 1), timedelta(minutes=3)
                        ),
                    )
        except Exception as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    def refresh():
        try:
            with psycopg.connect(migrated_database_url, autocommit=True) as c:
                for _ in range(4):
                    for name in rollups.names_for("bars_ohlcv"):
                        rollups.refresh_pending(c, name)
        except Exception as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    threads = [threading.Thread(target=ingest, args=(s,)) for s in ("AAPL", "MSFT")]
    threads += [threading.Thread(target=refresh) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    assert errors == []
    for name in rollups.names_for("bars_ohlcv"):
        rollups.refresh_pending(conn, name)
        assert rollup_rows(conn, name) == reference_rollup(source_rows(conn), rollups.aggregate(name).bucket)


def test_describe_reports_each_aggregate(conn):
    insert_bars(conn, bar_series("AAPL", BASE, BASE + timedelta(hours=3), timedelta(minutes=1)))
    docs = {d["name"]: d for d in rollups.describe(conn)}
    assert set(docs) == set(rollups.NAMES) and {"bars_ohlcv_1h", "bars_ohlcv_1d"} < set(docs)
    assert docs["bars_ohlcv_1h"]["pending_invalidations"] == 3 and docs["bars_ohlcv_1d"]["pending_invalidations"] == 1
    assert docs["bars_ohlcv_1h"]["last_refresh_at"] is None and docs["bars_ohlcv_1h"]["backend"] == "postgres"
    rollups.refresh_pending(conn, "bars_ohlcv_1h")
    doc = {d["name"]: d for d in rollups.describe(conn)}["bars_ohlcv_1h"]
    assert doc["pending_invalidations"] == 0 and doc["last_refresh_at"] is not None
    assert doc["watermark"] == BASE + timedelta(hours=3)
    assert doc["bucket_width"] == timedelta(hours=1) and doc["source"] == "bars_ohlcv"

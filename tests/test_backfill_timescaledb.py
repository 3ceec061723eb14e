"""Backfill on TimescaleDB: the same job into a hypertable, compressed chunks included.

Runs on the throwaway cluster of tests/support/timescale.py; skipped where timescaledb.so
is not installed.
"""

from __future__ import annotations

import time
import uuid

import psycopg
import pytest
import structlog

from app.jobs import backfill
from app.jobs.base import JobContext
from tests.support.backfill import bars, expected, stored, write_ndjson
from tests.support.db import make_settings
from tests.support.timescale import requires_timescaledb

pytestmark = [pytest.mark.timescaledb, requires_timescaledb]


def ctx(settings) -> JobContext:
    return JobContext(
        run_id=str(uuid.uuid4()),
        kind="test",
        settings=settings,
        log=structlog.get_logger("test"),
        deadline=time.monotonic() + 120,
    )


def test_load_reload_into_compressed_chunks_and_recompute_the_continuous_aggregates(
    timescale_migrated_url, redis_url, tmp_path
):
    settings = make_settings(timescale_migrated_url, redis_url, BACKFILL_SOURCE_DIR=tmp_path)
    rows = bars(3000, ("ts1", "ts2"))
    write_ndjson(tmp_path / "h.ndjson", rows)
    params = {
        "source": "h.ndjson",
        "format": "ndjson",
        "max_bad_rows": 0,
        "batch_rows": 500,
        "provider": None,
        "interval": None,
    }
    result = backfill.run_bars(ctx(settings), params)
    assert result["rows_written"] == 3000 and result["partitions_created"] == 0  # chunks are TimescaleDB's
    assert stored(timescale_migrated_url, ["ts1", "ts2"]) == expected(rows)

    with psycopg.connect(timescale_migrated_url, autocommit=True) as conn:
        compressed = conn.execute("SELECT count(compress_chunk(c)) FROM show_chunks('bars_ohlcv') c").fetchone()[0]
    assert compressed >= 1
    changed = [{**r, "close": r["close"] + 0.125} if i % 3 == 0 else r for i, r in enumerate(rows)]
    write_ndjson(tmp_path / "h.ndjson", changed)
    result = backfill.run_bars(ctx(settings), params)
    assert (result["rows_written"], result["rows_unchanged"]) == (1000, 2000)
    assert stored(timescale_migrated_url, ["ts1", "ts2"]) == expected(changed)

    agg = backfill.run_aggregates(
        ctx(settings),
        backfill.parse_aggregates({"start": "2024-02-05T00:00:00Z", "end": "2024-02-07T00:00:00Z"}, settings),
    )
    assert agg["aggregates"]["bars_ohlcv_1d"]["rows_written"] == 4  # two symbols, two days
    with psycopg.connect(timescale_migrated_url) as conn:
        assert conn.execute("SELECT sum(volume) FROM bars_ohlcv_1h").fetchone()[0] == expected(changed)[5]

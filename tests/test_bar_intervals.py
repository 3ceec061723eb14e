"""One interval vocabulary: the backfill normalises common spellings or rejects naming the
allowed values, and the database rejects anything else (CHECK from migration 0021)."""

from __future__ import annotations

import io
import json
import re
from pathlib import Path

import psycopg
import pytest

from app.backfill.rows import Reader
from app.errors import BadRequest
from app.jobs import backfill as backfill_job
from app.timeseries import intervals
from tests.support.copy_rows import decode

MIGRATION = Path(__file__).resolve().parent.parent / "migrations" / "0021_bar_intervals.sql"
ROW = {
    "provider": "p",
    "symbol": "A",
    "ts": "2024-01-02T00:00:00Z",
    "open": 1,
    "high": 2,
    "low": 1,
    "close": 2,
    "volume": 3,
}


@pytest.mark.parametrize(
    "spelling, name",
    [
        ("1d", "1d"),
        ("1D", "1d"),
        ("1day", "1d"),
        ("24h", "1d"),
        ("1min", "1m"),
        ("1Min", "1m"),
        ("1 minute", "1m"),
        ("60m", "1h"),
        ("60min", "1h"),
        ("1H", "1h"),
        ("7d", "1w"),
        ("1W", "1w"),
        ("1M", "1mo"),
        ("1mo", "1mo"),
        ("1month", "1mo"),
        ("300s", "5m"),
        ("30S", "30s"),
    ],
)
def test_common_spellings_become_the_canonical_name(spelling, name):
    assert intervals.normalise(spelling) == name


@pytest.mark.parametrize("spelling", ["7m", "2d", "30d", "4w", "0m", "daily", "1", "m", "1fortnight", "1.5h", ""])
def test_anything_else_is_rejected_naming_the_allowed_values(spelling):
    with pytest.raises(intervals.UnknownInterval, match="is not one of 1s 5s .* 1d 1w 1mo"):
        intervals.normalise(spelling)


def test_rollup_sources_are_strictly_finer_than_the_bucket():
    assert intervals.finer_than(3600)[-1] == "30m" and "1h" not in intervals.finer_than(3600)
    assert intervals.finer_than(86400)[-1] == "12h" and "1d" not in intervals.finer_than(86400)


def test_the_migration_check_lists_exactly_the_vocabulary():
    text = MIGRATION.read_text()
    check = text[text.index('CHECK ("interval" IN') :]
    assert re.findall(r"'([0-9a-z]+)'", check[: check.index("))")]) == list(intervals.ALLOWED)


def _rows(*values):
    data = b"".join(json.dumps({**ROW, "interval": v}).encode() + b"\n" for v in values)
    reader = Reader(io.BufferedReader(io.BytesIO(data)), "ndjson", batch_rows=100, max_bad_rows=100)
    batches = list(reader.batches())
    rows = decode([c for b in batches for c in b.chunks])
    return [row[2] for row in rows], [s for b in batches for s in b.samples]


def test_the_backfill_stores_the_canonical_name_and_names_the_allowed_values_for_others():
    stored, bad = _rows("1D", "1min", "60m", "7m")
    assert stored == ["1d", "1m", "1h"]
    assert len(bad) == 1 and bad[0]["line"] == 4 and "is not one of 1s" in bad[0]["reason"]


def test_the_default_interval_of_a_backfill_is_normalised_or_a_400():
    assert backfill_job._bar_interval("1D") == "1d"
    with pytest.raises(BadRequest, match="is not one of"):
        backfill_job._bar_interval("daily")


def test_the_database_rejects_an_unknown_interval(migrated_database_url):
    with psycopg.connect(migrated_database_url, autocommit=True) as conn:
        insert = 'INSERT INTO bars_ohlcv (provider, symbol, "interval", ts, close) VALUES (%s, %s, %s, %s, 1)'
        conn.execute(insert, ("p", "A", "1d", "2024-01-02T00:00:00Z"))
        with pytest.raises(psycopg.errors.CheckViolation, match="bars_ohlcv_interval_known"):
            conn.execute(insert, ("p", "A", "1D", "2024-01-02T00:00:00Z"))


def test_the_migration_normalises_stored_rows_and_stops_clearly_on_a_value_it_cannot_map(migrated_database_url):
    with psycopg.connect(migrated_database_url, autocommit=True) as conn:
        conn.execute("ALTER TABLE bars_ohlcv DROP CONSTRAINT bars_ohlcv_interval_known")  # a store from before 0021
        rows = [
            ("1d", "2024-01-02", 1.0),
            ("1D", "2024-01-02", 2.0),  # the same bar twice: the canonical row stays
            ("1D", "2024-01-03", 3.0),
            ("1day", "2024-01-03", 4.0),  # two spellings of one bar, neither canonical: one stays
            ("1min", "2024-01-02", 5.0),
            ("60m", "2024-01-02", 6.0),
        ]
        for interval, ts, close in rows:
            conn.execute(
                'INSERT INTO bars_ohlcv (provider, symbol, "interval", ts, close) VALUES (%s, %s, %s, %s, %s)',
                ("p", "A", interval, ts, close),
            )
        conn.execute(MIGRATION.read_text())
        got = conn.execute('SELECT "interval", ts::date::text, close FROM bars_ohlcv ORDER BY 1, 2').fetchall()
        assert got == [
            ("1d", "2024-01-02", 1.0),
            ("1d", "2024-01-03", 3.0),
            ("1h", "2024-01-02", 6.0),
            ("1m", "2024-01-02", 5.0),
        ]
        conn.execute(MIGRATION.read_text())  # idempotent

        conn.execute("ALTER TABLE bars_ohlcv DROP CONSTRAINT bars_ohlcv_interval_known")
        conn.execute(
            """INSERT INTO bars_ohlcv (provider, symbol, "interval", ts, close) VALUES ('p', 'A', 'daily', '2024-01-05', 1)"""
        )
        with pytest.raises(psycopg.errors.RaiseException, match="outside the vocabulary: 'daily'") as err:
            conn.execute(MIGRATION.read_text())
        assert "update or delete those rows" in (err.value.diag.message_hint or "")
        assert conn.execute("SELECT count(*) FROM bars_ohlcv WHERE \"interval\" = '1d'").fetchone()[0] == 2  # unchanged

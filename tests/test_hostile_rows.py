"""Rows that could hurt the store are refused, each with its line and a reason
(app/backfill/rows.py, docs/backfill.md "Row rules")."""

from __future__ import annotations

import io
import json
from datetime import UTC, datetime

import pytest

from app.backfill.rows import MAX_VALUE, Reader, RowLimits
from tests.support.copy_rows import decode

GOOD = {
    "provider": "prov",
    "symbol": "AAPL",
    "interval": "1m",
    "ts": "2024-01-02T03:04:05Z",
    "open": "10.5",
    "high": "11",
    "low": "10",
    "close": "10.75",
    "volume": "1200",
}
NOW = datetime(2026, 1, 15, tzinfo=UTC).timestamp()  # "now" for the window: fixed, not today
WINDOW = RowLimits(max_epoch=NOW + 2 * 86400)


def read(lines: list[bytes], fmt: str = "ndjson", limits: RowLimits = WINDOW, max_bad_rows: int = 1000):
    reader = Reader(
        io.BufferedReader(io.BytesIO(b"".join(lines))), fmt, batch_rows=100, max_bad_rows=max_bad_rows, limits=limits
    )
    batches = list(reader.batches())
    rows = decode([chunk for b in batches for chunk in b.chunks])
    return rows, [(s["line"], s["reason"]) for b in batches for s in b.samples]


def one(**change) -> list[tuple[int, str]]:
    rows, bad = read([json.dumps({**GOOD, **change}).encode() + b"\n"])
    return bad


@pytest.mark.parametrize(
    "field, value",
    [
        ("open", "0_5"),  # Python's float() reads 5
        ("volume", "1_000"),
        ("high", "١٢"),  # Arabic-Indic digits
        ("high", "１２"),  # full-width digits
        ("volume", "inf"),
        ("volume", "Infinity"),
        ("volume", "nan"),
        ("open", "0x10"),
        ("open", "1.5e"),
        ("open", "--1"),
        ("open", "1,5"),
        ("open", "1" * 80),
    ],
)
def test_numbers_need_plain_ascii_syntax(field, value):
    [(line, reason)] = one(**{field: value})
    assert line == 1 and reason.startswith(f"{field} is not a number"), reason


@pytest.mark.parametrize(
    "change, reason",
    [
        ({"volume": "1.79e308"}, "volume must be at least 0 and below 1e+15"),
        ({"volume": 1.79e308}, "volume must be at least 0 and below 1e+15"),
        ({"volume": 10**30}, "below 1e+15"),
        ({"volume": "1e15"}, "volume must be at least 0 and below 1e+15"),
        ({"open": "-1", "low": "-2"}, "prices must be at least 0 and below 1e+15"),
        ({"high": "1e15", "open": "1e14"}, "prices must be at least 0 and below 1e+15"),
        ({"volume": "-0.5"}, "volume must be at least 0"),
    ],
)
def test_numbers_stay_within_what_the_rollups_can_sum(change, reason):
    [(_, got)] = one(**change)
    assert reason in got, got


def test_the_bounds_themselves_are_accepted():
    edge = float(MAX_VALUE) * 0.999
    rows, bad = read([json.dumps({**GOOD, "open": 0, "low": 0, "close": 0, "high": edge, "volume": edge}).encode()])
    assert bad == [] and len(rows) == 1
    rows, bad = read([json.dumps({**GOOD, "open": "+1.5E+1", "high": "16", "close": ".5e1", "low": "5."}).encode()])
    assert bad == [] and rows[0][4:8] == [15.0, 16.0, 5.0, 5.0]


@pytest.mark.parametrize(
    "ts, reason",
    [
        ("1899-12-31T23:59:59Z", "outside the accepted window 1900-01-01T00:00:00+00:00"),
        ("2026-01-17T00:00:01Z", "outside the accepted window"),  # now + 2 days + 1 s
        ("2099-12-31T00:00:00Z", "outside the accepted window"),
        ("2024-01-02T03:04:05.123456789Z", "digits past the microsecond"),
        ("2024-01-02T03:04:05,1234567Z", "digits past the microsecond"),
        ("٢٠٢٤-01-02T03:04:05Z", "not an ISO 8601 time in ASCII"),
        ("2024-01-02T03:04:05Z" + " " * 60, "not an ISO 8601 time in ASCII"),
    ],
)
def test_times_lie_in_the_window_and_keep_their_precision(ts, reason):
    [(_, got)] = one(ts=ts)
    assert reason in got, got


def test_nanosecond_zeros_and_the_window_edges_are_accepted():
    rows, bad = read(
        [
            json.dumps({**GOOD, "ts": "2024-01-02T03:04:05.123456000Z"}).encode() + b"\n",
            json.dumps({**GOOD, "ts": "1900-01-01T00:00:00Z"}).encode() + b"\n",
            json.dumps({**GOOD, "ts": "2026-01-16T23:59:59Z"}).encode() + b"\n",
        ]
    )
    assert bad == [] and len(rows) == 3
    assert [r[3] for r in rows] == [
        datetime(2024, 1, 2, 3, 4, 5, 123456, tzinfo=UTC),
        datetime(1900, 1, 1, tzinfo=UTC),
        datetime(2026, 1, 16, 23, 59, 59, tzinfo=UTC),
    ]


@pytest.mark.parametrize(
    "symbol", ["=CMD|' /C CALC'!A0", "+1", "-2", "@SUM(A1)", "A B", "AAPL;DROP", "É", "a'b", "/ES", ":X", "A\tB"]
)
def test_symbols_outside_the_charset_or_with_a_formula_start_are_refused(symbol):
    [(_, got)] = one(symbol=symbol)
    assert got.startswith("symbol"), got


def test_symbols_of_real_markets_are_accepted():
    symbols = ["BRK.B", "^GSPC", "EUR/USD", "ES=F", "CL:NYM", "_X", ".DJI", "7203", "rds-a"]
    rows, bad = read([json.dumps({**GOOD, "symbol": s}).encode() + b"\n" for s in symbols])
    assert bad == [] and [r[1] for r in rows] == [s.upper() for s in symbols]


def test_providers_and_intervals_never_start_like_a_formula():
    assert one(provider="=HYPERLINK(1)")[0][1].startswith("provider")
    assert one(interval="@1m")[0][1].startswith("interval")


def test_an_unterminated_quote_fails_its_own_line_only():
    header = b"provider,symbol,interval,ts,open,high,low,close,volume\n"
    good = b"prov,AAPL,1m,2024-01-02T03:04:05Z,10.5,11,10,10.75,1200\n"
    rows, bad = read(
        [header, good, b'prov,"AAPL,1m,2024-01-02T03:04:06Z,10.5,11,10,10.75,1200\n', good.replace(b"05Z", b"07Z")]
        + [good.replace(b"05Z", b"%02dZ" % s) for s in range(10, 20)],
        fmt="csv",
    )
    assert len(rows) == 12
    assert bad == [(3, "malformed CSV: unexpected end of data (quotes must close on the same line)")]

"""Backfill row parsing and validation (app/backfill/rows.py), without a database.

What a user notices: which rows are accepted and how (symbol upper-cased, time exact to
the microsecond), which are refused with what reason and line number, and when
`max_bad_rows` stops the load.
"""

from __future__ import annotations

import gzip
import io
import json
from datetime import UTC, datetime

import pytest

from app.backfill.rows import Reader, TooManyBadRows, epoch_to_datetime, micros_to_datetime
from app.backfill.sources import SourceError
from tests.support.copy_rows import decode

GOOD = {
    "provider": "prov",
    "symbol": "aapl",
    "interval": "1m",
    "ts": "2024-01-02T03:04:05.123456Z",
    "open": 10.5,
    "high": 11.0,
    "low": 10.0,
    "close": 10.75,
    "volume": 1200,
}


def ndjson(*rows) -> bytes:
    return b"".join((r if isinstance(r, bytes) else json.dumps(r).encode()) + b"\n" for r in rows)


def read(data: bytes, fmt: str = "ndjson", **kw):
    kw.setdefault("batch_rows", 1000)
    kw.setdefault("max_bad_rows", 1000)
    reader = Reader(io.BufferedReader(io.BytesIO(data)), fmt, **kw)
    batches = list(reader.batches())
    return reader, batches


def parsed(batches) -> list[list]:
    """The rows as COPY will see them (binary tuples, decoded)."""
    return decode([c for b in batches for c in b.chunks])


def samples(batches) -> list[dict]:
    return [s for b in batches for s in b.samples]


def test_a_good_row_becomes_csv_for_copy_with_symbol_uppercased_and_exact_time():
    _, batches = read(ndjson(GOOD))
    [row] = parsed(batches)
    assert row[:3] == ["prov", "AAPL", "1m"]
    assert row[3] == datetime(2024, 1, 2, 3, 4, 5, 123456, tzinfo=UTC)
    assert row[4:] == [10.5, 11.0, 10.0, 10.75, 1200.0]
    assert epoch_to_datetime(batches[0].min_epoch) == datetime(2024, 1, 2, 3, 4, 5, 123456, tzinfo=UTC)
    assert [micros_to_datetime(us) for us in batches[0].stamps] == [row[3]]
    assert batches[-1].end_line == 1 and batches[-1].end_offset == len(ndjson(GOOD))
    assert batches[0].symbols == {"AAPL"} and batches[0].providers == {"prov"}


@pytest.mark.parametrize(
    "ts, expected",
    [
        ("2024-01-02T03:04:05Z", datetime(2024, 1, 2, 3, 4, 5, tzinfo=UTC)),
        ("2024-01-02 03:04:05", datetime(2024, 1, 2, 3, 4, 5, tzinfo=UTC)),  # no offset: UTC
        ("2024-01-02T05:04:05+02:00", datetime(2024, 1, 2, 3, 4, 5, tzinfo=UTC)),
        ("2024-01-02", datetime(2024, 1, 2, tzinfo=UTC)),
    ],
)
def test_times_in_any_iso_8601_form_are_stored_as_the_same_utc_instant(ts, expected):
    _, batches = read(ndjson({**GOOD, "ts": ts}))
    [row] = parsed(batches)
    assert row[3] == expected
    assert epoch_to_datetime(batches[0].max_epoch) == expected


@pytest.mark.parametrize(
    "change, reason",
    [
        ({"ts": "yesterday"}, "ts is not an ISO 8601 time"),
        ({"ts": 1704164645}, "ts must be an ISO 8601 string"),
        ({"ts": "1899-12-31T23:59:59Z"}, "outside the accepted window"),
        ({"open": "ten"}, "open is not a number"),
        ({"close": None}, "close is missing"),
        ({"high": True}, "high is not a number"),
        ({"volume": "NaN"}, "volume is not a number"),
        ({"volume": -1}, "volume must be at least 0"),
        ({"low": 10.6}, "low 10.6 > open 10.5"),
        ({"high": 10.7}, "close 10.75 > high 10.7"),
        ({"low": 12.0, "high": 11.0, "open": 11.5}, "low 12.0 > high 11.0"),
        ({"symbol": ""}, "symbol is empty"),
        ({"symbol": 'A"B'}, "symbol"),
        ({"symbol": "X" * 33}, "symbol is longer than 32"),
        ({"provider": ["p"]}, "provider must be a string"),
    ],
)
def test_each_kind_of_bad_row_is_refused_with_its_line_and_reason(change, reason):
    _, batches = read(ndjson(GOOD, {**GOOD, **change}, GOOD))
    assert len(parsed(batches)) == 2
    [bad] = samples(batches)
    assert bad["line"] == 2
    assert reason in bad["reason"], bad


def test_broken_json_missing_fields_and_non_objects_are_bad_rows_and_blank_lines_are_skipped():
    missing = {k: v for k, v in GOOD.items() if k != "low"}
    _, batches = read(ndjson(GOOD, b"{not json", b"", b"[1, 2]", missing, GOOD))
    assert len(parsed(batches)) == 2
    assert [(s["line"], s["reason"].split(":")[0]) for s in samples(batches)] == [
        (2, "invalid JSON"),
        (4, "not a JSON object"),
        (5, "low is missing"),
    ]
    assert sum(b.read for b in batches) == 5  # the blank line is not a row
    assert sum(b.rejected for b in batches) == 3


def test_one_bad_row_over_max_bad_rows_stops_the_read_naming_the_first_bad_line():
    data = ndjson(GOOD, {**GOOD, "open": "x"}, GOOD, {**GOOD, "ts": "never"}, GOOD)
    _, batches = read(data, max_bad_rows=2)
    assert sum(b.rejected for b in batches) == 2
    with pytest.raises(TooManyBadRows) as err:
        read(data, max_bad_rows=1)
    assert err.value.count == 2
    assert err.value.first == {"line": 2, "reason": "open is not a number: 'x'"}
    assert "first bad line 2" in str(err.value)


def test_batches_are_cut_at_batch_rows_with_exact_end_offsets():
    rows = [dict(GOOD, ts=f"2024-01-01T00:{i:02d}:00Z") for i in range(25)]
    data = ndjson(*rows)
    _, batches = read(data, batch_rows=10)
    assert [b.rows for b in batches] == [10, 10, 5]
    ends = [b.end_offset for b in batches]
    assert ends[-1] == len(data)
    assert data[: ends[0]].count(b"\n") == 10 and [b.end_line for b in batches] == [10, 20, 25]


def test_a_reader_started_at_an_offset_continues_the_line_numbers():
    rows = [dict(GOOD, ts=f"2024-01-01T00:{i:02d}:00Z") for i in range(6)]
    data = ndjson(*rows[:3], {**GOOD, "open": "x"}, *rows[3:])
    first = ndjson(*rows[:3])
    _, batches = read(data[len(first) :], line=3, offset=len(first))
    assert samples(batches) == [{"line": 4, "reason": "open is not a number: 'x'"}]
    assert [r[3].strftime("%H:%M") for r in parsed(batches)] == ["00:03", "00:04", "00:05"]
    assert batches[-1].end_line == 7 and batches[-1].end_offset == len(data)


def test_provider_and_interval_parameters_apply_to_every_row_and_rows_must_agree():
    row = {k: v for k, v in GOOD.items() if k not in ("provider", "interval")}
    agreeing = dict(GOOD, provider="dflt", interval="1d")
    _, batches = read(ndjson(row, GOOD, agreeing), provider="dflt", interval="1d")
    assert [r[0:3] for r in parsed(batches)] == [["dflt", "AAPL", "1d"], ["dflt", "AAPL", "1d"]]
    assert samples(batches) == [{"line": 2, "reason": "provider 'prov' differs from the provider parameter 'dflt'"}]


def test_csv_with_a_header_in_any_column_order_and_quoted_fields():
    text = (
        "Volume,ts,symbol,provider,interval,open,high,low,close,extra\n"
        '1200,2024-01-02T03:04:05Z,"brk.b",prov,1d,1,2,0.5,1.5,ignored\n'
        "5,2024-01-03T00:00:00Z,msft,prov,1d,1,2,0.5,bad,x\n"
        "1,2,3\n"
    )
    reader, batches = read(text.encode(), "csv")
    assert [r[0:3] for r in parsed(batches)] == [["prov", "BRK.B", "1d"]]
    assert [(s["line"], s["reason"]) for s in samples(batches)] == [
        (3, "close is not a number: 'bad'"),
        (4, "expected 10 fields, got 3"),
    ]
    assert reader.header[0] == "volume" and batches[-1].header == reader.header


def test_csv_without_a_needed_column_is_refused_as_a_whole():
    with pytest.raises(SourceError, match="lacks column.*volume"):
        read(b"provider,symbol,interval,ts,open,high,low,close\np,A,1m,2024-01-01,1,1,1,1\n", "csv")


def test_a_truncated_gzip_stream_is_a_source_error():
    blob = gzip.compress(ndjson(*[GOOD] * 2000))
    with pytest.raises(SourceError, match="cannot be read"):
        list(
            Reader(
                gzip.GzipFile(fileobj=io.BytesIO(blob[: len(blob) // 2])), "ndjson", batch_rows=100, max_bad_rows=0
            ).batches()
        )


def test_the_first_batch_is_small_so_writing_starts_at_once_then_batches_are_batch_rows():
    from app.backfill.rows import FIRST_BATCH_ROWS

    rows = [dict(GOOD, ts=f"2024-01-{1 + i // 1440:02d}T{i // 60 % 24:02d}:{i % 60:02d}:00Z") for i in range(42_000)]
    _, batches = read(ndjson(*rows), batch_rows=15_000)
    assert FIRST_BATCH_ROWS == 20_000 and [b.rows for b in batches] == [15_000, 15_000, 12_000]
    _, batches = read(ndjson(*rows), batch_rows=30_000)
    assert [b.rows for b in batches] == [20_000, 22_000]
    assert [b.end_line for b in batches] == [20_000, 42_000]

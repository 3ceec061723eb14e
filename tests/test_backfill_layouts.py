"""Vendor files as they come (app/backfill/layout.py): presets, column mappings, headerless
files, delimiters, decimal commas, epoch and strftime times, time zones across DST, dry runs.

Each test writes a file laid out as the vendor publishes it, validates the trigger body
exactly as the API does (`parse_bars`), runs the job in-process against a real migrated
database and checks every stored value.
"""

from __future__ import annotations

import gzip
from datetime import UTC, datetime

import psycopg
import pytest

from app.errors import BadRequest
from app.jobs import backfill, runner
from app.jobs.base import JobError
from tests.support.backfill import job_context
from tests.support.common import wait_for
from tests.support.db import make_settings


@pytest.fixture
def source_dir(tmp_path):
    path = tmp_path / "src"
    path.mkdir()
    return path


@pytest.fixture
def settings(migrated_database_url, redis_url, source_dir):
    s = make_settings(migrated_database_url, redis_url, BACKFILL_SOURCE_DIR=source_dir, BACKFILL_URL_ALLOW="127.0.0.1")
    SETTINGS[:] = [s]  # what parse() validates against, as the API does
    yield s
    SETTINGS.clear()


SETTINGS: list = []


def parse(body: dict) -> dict:
    return backfill.parse_bars(body, SETTINGS[0])


def run(settings, params: dict) -> dict:
    return backfill.run_bars(job_context(settings), params)


def load(settings, source_dir, name: str, data: str | bytes, **body) -> dict:
    raw = data.encode() if isinstance(data, str) else data
    (source_dir / name).write_bytes(gzip.compress(raw) if name.endswith(".gz") else raw)
    return run(settings, parse({"source": name, **body}))


def rows(url: str) -> list[tuple]:
    with psycopg.connect(url) as conn:
        return conn.execute(
            """SELECT provider, symbol, interval, ts, open, high, low, close, volume
               FROM bars_ohlcv ORDER BY symbol, ts"""
        ).fetchall()


def t(text: str) -> datetime:
    return datetime.fromisoformat(text).astimezone(UTC)


# -- presets ------------------------------------------------------------------------------------
YAHOO = """Date,Open,High,Low,Close,Adj Close,Volume
1980-12-12,0.128348,0.128906,0.128348,0.128348,0.098943,469033600
1999-06-01,0.608817,0.612723,0.581473,0.589286,0.497461,310576800
2024-03-01,179.550003,180.529999,177.380005,179.660004,178.940002,73488000
2024-03-04,176.149994,176.899994,173.789993,175.100006,174.398117,81510100
2024-03-05,null,null,null,null,null,null
"""


def test_yahoo_preset_stores_close_not_adj_close_and_null_rows_are_bad(settings, source_dir):
    result = load(settings, source_dir, "AAPL.csv", YAHOO, preset="yahoo", symbol="aapl", max_bad_rows=1)
    assert result["rows_written"] == 4 and result["rows_rejected"] == 1
    assert result["bad_rows"] == [{"line": 6, "reason": "open is not a number: 'null'"}]
    assert rows(settings.database_url) == [
        ("yahoo", "AAPL", "1d", t("1980-12-12T00:00:00Z"), 0.128348, 0.128906, 0.128348, 0.128348, 469033600.0),
        ("yahoo", "AAPL", "1d", t("1999-06-01T00:00:00Z"), 0.608817, 0.612723, 0.581473, 0.589286, 310576800.0),
        ("yahoo", "AAPL", "1d", t("2024-03-01T00:00:00Z"), 179.550003, 180.529999, 177.380005, 179.660004, 73488000.0),
        ("yahoo", "AAPL", "1d", t("2024-03-04T00:00:00Z"), 176.149994, 176.899994, 173.789993, 175.100006, 81510100.0),
    ]
    # daily bars: a partition for each year that has rows (1980, 1999, 2024), not every week of 44 years
    assert result["partitions_created"] == 3
    with psycopg.connect(settings.database_url) as conn:
        made = conn.execute(
            "SELECT relname FROM pg_class WHERE relname IN ('bars_ohlcv_p19800101', 'bars_ohlcv_p19990101', "
            "'bars_ohlcv_p20240101')"
        ).fetchall()
    assert len(made) == 3


def test_stooq_preset_with_and_without_volume(settings, source_dir):
    load(
        settings,
        source_dir,
        "aapl_us_d.csv",
        "Date,Open,High,Low,Close,Volume\n1984-09-07,0.100763,0.101999,0.0995237,0.100763,97676041\n",
        preset="stooq",
        symbol="AAPL.US",
    )
    load(
        settings,
        source_dir,
        "spx_d.csv",
        "Date,Open,High,Low,Close\n1950-01-03,16.66,16.66,16.66,16.66\n2024-03-01,5098.51,5140.33,5094.16,5137.08\n",
        preset="stooq",
        symbol="^SPX",
        max_bad_rows=1,
    )
    assert rows(settings.database_url) == [
        ("stooq", "AAPL.US", "1d", t("1984-09-07T00:00:00Z"), 0.100763, 0.101999, 0.0995237, 0.100763, 97676041.0),
        ("stooq", "^SPX", "1d", t("1950-01-03T00:00:00Z"), 16.66, 16.66, 16.66, 16.66, None),
        ("stooq", "^SPX", "1d", t("2024-03-01T00:00:00Z"), 5098.51, 5140.33, 5094.16, 5137.08, None),
    ]


def test_polygon_flat_file_aggregates_with_epoch_nanoseconds(settings, source_dir):
    data = (
        "ticker,volume,open,close,high,low,window_start,transactions\n"
        "A,1290,151.14,151.2,151.2,151.14,1709303400000000000,24\n"
        "AAPL,392018,179.55,179.71,179.8,179.5,1709303400000000000,5211\n"
        "AAPL,251204,179.71,179.62,179.75,179.58,1709303460000000000,3120\n"
        "BRK.B,1500,410.01,410.5,410.6,409.99,1709303400123456000,30\n"
    )
    result = load(settings, source_dir, "2024-03-01.csv.gz", data, preset="polygon_aggs", interval="1m")
    assert result["compressed"] and result["rows_written"] == 4
    assert rows(settings.database_url) == [
        ("polygon", "A", "1m", t("2024-03-01T14:30:00Z"), 151.14, 151.2, 151.14, 151.2, 1290.0),
        ("polygon", "AAPL", "1m", t("2024-03-01T14:30:00Z"), 179.55, 179.8, 179.5, 179.71, 392018.0),
        ("polygon", "AAPL", "1m", t("2024-03-01T14:31:00Z"), 179.71, 179.75, 179.58, 179.62, 251204.0),
        ("polygon", "BRK.B", "1m", t("2024-03-01T14:30:00.123456Z"), 410.01, 410.6, 409.99, 410.5, 1500.0),
    ]


def test_binance_klines_headerless_in_milliseconds_and_microseconds(settings, source_dir):
    ms = (
        "1709251200000,61130.98000000,61200.00000000,61100.00000000,61150.01000000,123.45600000,"
        "1709251259999,7549876.12345678,4321,60.12300000,3677654.32100000,0\n"
        "1709251260000,61150.01000000,61160.00000000,61140.00000000,61155.00000000,98.76500000,"
        "1709251319999,6039876.12345678,3210,50.12300000,3065432.10000000,0\n"
    )
    us = (
        "1735689600000000,93576.00000000,93610.93000000,93537.50000000,93610.93000000,8.21827000,"
        "1735689659999999,768978.44389210,1427,4.15212000,388485.71070820,0\n"
    )
    load(
        settings, source_dir, "BTCUSDT-1m-2024-03-01.csv", ms, preset="binance_klines", symbol="BTCUSDT", interval="1m"
    )
    load(
        settings, source_dir, "BTCUSDT-1m-2025-01-01.csv", us, preset="binance_klines", symbol="BTCUSDT", interval="1m"
    )
    assert rows(settings.database_url) == [
        ("binance", "BTCUSDT", "1m", t("2024-03-01T00:00:00Z"), 61130.98, 61200.0, 61100.0, 61150.01, 123.456),
        ("binance", "BTCUSDT", "1m", t("2024-03-01T00:01:00Z"), 61150.01, 61160.0, 61140.0, 61155.0, 98.765),
        ("binance", "BTCUSDT", "1m", t("2025-01-01T00:00:00Z"), 93576.0, 93610.93, 93537.5, 93610.93, 8.21827),
    ]


# -- mappings and formats -------------------------------------------------------------------------
def test_a_pandas_file_with_an_empty_date_header_mapped_by_columns(settings, source_dir):
    data = ",Open,High,Low,Close,Volume\n2001-09-10,10.0,11.0,9.5,10.5,100\n2001-09-17,10.5,12.0,10.0,11.0,\n"
    load(
        settings,
        source_dir,
        "export.csv",
        data,
        columns={"ts": ""},
        symbol="msft",
        provider="pandas",
        interval="1w",
        volume="optional",
    )
    assert rows(settings.database_url) == [
        ("pandas", "MSFT", "1w", t("2001-09-10T00:00:00Z"), 10.0, 11.0, 9.5, 10.5, 100.0),
        ("pandas", "MSFT", "1w", t("2001-09-17T00:00:00Z"), 10.5, 12.0, 10.0, 11.0, None),
    ]


def test_a_headerless_file_with_columns_as_a_list_and_skipped_columns(settings, source_dir):
    data = "X1,2010-05-06T14:45:00Z,ignored,10,12,8,9,5000\nX2,2010-05-06T14:45:00Z,ignored,1,2,1,2,7\n"
    load(
        settings,
        source_dir,
        "flash.csv",
        data,
        header=False,
        columns=["symbol", "ts", None, "open", "high", "low", "close", "volume"],
        provider="feed",
        interval="1m",
    )
    assert rows(settings.database_url) == [
        ("feed", "X1", "1m", t("2010-05-06T14:45:00Z"), 10.0, 12.0, 8.0, 9.0, 5000.0),
        ("feed", "X2", "1m", t("2010-05-06T14:45:00Z"), 1.0, 2.0, 1.0, 2.0, 7.0),
    ]


def test_semicolons_and_decimal_commas_with_a_strftime_time(settings, source_dir):
    data = (
        "Datum;Eröffnung;Hoch;Tief;Schluss;Volumen\n"
        "02.01.1991 09:00;1398,5;1402,25;1390;1400,75;12345,5\n"
        "03.01.1991 09:00;1400,75;1410;1399;1405;0\n"
    )
    load(
        settings,
        source_dir,
        "dax.csv",
        data,
        delimiter=";",
        decimal=",",
        columns={
            "ts": "datum",
            "open": "Eröffnung",
            "high": "hoch",
            "low": "TIEF",
            "close": "Schluss",
            "volume": "Volumen",
        },
        ts_format="%d.%m.%Y %H:%M",
        timezone="Europe/Berlin",
        symbol="DAX",
        provider="boerse",
        interval="1d",
    )
    assert rows(settings.database_url) == [
        ("boerse", "DAX", "1d", t("1991-01-02T08:00:00Z"), 1398.5, 1402.25, 1390.0, 1400.75, 12345.5),
        ("boerse", "DAX", "1d", t("1991-01-03T08:00:00Z"), 1400.75, 1410.0, 1399.0, 1405.0, 0.0),
    ]


@pytest.mark.parametrize(
    ("ts_format", "values"),
    [
        ("epoch_s", ["1709251200", "1709251260.5"]),
        ("epoch_ms", ["1709251200000", "1709251260500"]),
        ("epoch_us", ["1709251200000000", "1709251260500000"]),
        ("epoch_ns", ["1709251200000000000", "1709251260500000000"]),
    ],
)
def test_epoch_times_in_every_unit(settings, source_dir, ts_format, values):
    data = "time,o,h,l,c,v\n" + "".join(f"{v},1,2,0.5,1.5,10\n" for v in values)
    load(
        settings,
        source_dir,
        f"e-{ts_format}.csv",
        data,
        columns={"ts": "time", "open": "o", "high": "h", "low": "l", "close": "c", "volume": "v"},
        ts_format=ts_format,
        symbol="EP",
        provider="p",
        interval="1m",
    )
    assert [r[3] for r in rows(settings.database_url)] == [t("2024-03-01T00:00:00Z"), t("2024-03-01T00:01:00.5Z")]


def test_ndjson_keys_are_mapped_case_insensitively_with_epoch_milliseconds(settings, source_dir):
    data = (
        '{"Ticker":"ETHUSD","TIME":1709251200000,"Open":3400.5,"High":3410,"Low":3390,"Close":3405.25,"Vol":12.5}\n'
        '{"Ticker":"ETHUSD","TIME":1709251260000,"Open":3405.25,"High":3406,"Low":3401,"Close":3402,"Vol":3}\n'
    )
    load(
        settings,
        source_dir,
        "eth.ndjson",
        data,
        columns={"symbol": "ticker", "ts": "time", "volume": "VOL"},
        ts_format="epoch_ms",
        provider="x",
        interval="1m",
    )
    assert rows(settings.database_url) == [
        ("x", "ETHUSD", "1m", t("2024-03-01T00:00:00Z"), 3400.5, 3410.0, 3390.0, 3405.25, 12.5),
        ("x", "ETHUSD", "1m", t("2024-03-01T00:01:00Z"), 3405.25, 3406.0, 3401.0, 3402.0, 3.0),
    ]


def test_naive_times_in_new_york_across_both_dst_changes(settings, source_dir):
    data = (
        "ts,open,high,low,close,volume\n"
        "2024-03-10T00:00:00,1,1,1,1,1\n"  # EST: 05:00Z
        "2024-03-10T01:00:00,1,1,1,1,1\n"  # 06:00Z
        "2024-03-10T02:30:00,1,1,1,1,1\n"  # does not exist (clocks jump 02:00 -> 03:00)
        "2024-03-10T03:00:00,1,1,1,1,1\n"  # EDT: 07:00Z
        "2024-11-03T00:30:00,1,1,1,1,1\n"  # EDT: 04:30Z
        "2024-11-03T01:30:00,1,1,1,1,1\n"  # ambiguous (01:00-02:00 happens twice)
        "2024-11-03T02:00:00,1,1,1,1,1\n"  # EST: 07:00Z
        "2024-11-03T09:30:00-05:00,1,1,1,1,1\n"  # an explicit offset is kept
    )
    result = load(
        settings,
        source_dir,
        "ny.csv",
        data,
        timezone="America/New_York",
        symbol="NY",
        provider="p",
        interval="1h",
        max_bad_rows=2,
    )
    assert [r[3] for r in rows(settings.database_url)] == [
        t("2024-03-10T05:00:00Z"),
        t("2024-03-10T06:00:00Z"),
        t("2024-03-10T07:00:00Z"),
        t("2024-11-03T04:30:00Z"),
        t("2024-11-03T07:00:00Z"),
        t("2024-11-03T14:30:00Z"),
    ]
    assert result["bad_rows"] == [
        {
            "line": 4,
            "reason": "ts '2024-03-10T02:30:00' does not exist in America/New_York (skipped by a daylight-saving change)",
        },
        {
            "line": 7,
            "reason": "ts '2024-11-03T01:30:00' is ambiguous in America/New_York (repeated by a daylight-saving change)",
        },
    ]


def test_a_row_disagreeing_with_a_constant_is_bad(settings, source_dir):
    data = "symbol,ts,open,high,low,close,volume\nAAA,2024-01-02,1,1,1,1,1\nBBB,2024-01-02,1,1,1,1,1\n"
    result = load(settings, source_dir, "k.csv", data, symbol="aaa", provider="p", interval="1d", max_bad_rows=1)
    assert result["rows_written"] == 1
    assert result["bad_rows"] == [{"line": 3, "reason": "symbol 'BBB' differs from the symbol parameter 'AAA'"}]


# -- errors before anything is written ------------------------------------------------------------
def test_a_header_that_does_not_match_is_a_400_at_trigger_time_naming_columns_and_the_delimiter(settings, source_dir):
    (source_dir / "semi.csv.gz").write_bytes(gzip.compress(b"Date;Open;High;Low;Close;Volume\n2024-01-02;1;1;1;1;1\n"))
    with pytest.raises(BadRequest) as err:
        parse({"source": "semi.csv.gz", "preset": "stooq", "symbol": "X"})
    message = str(err.value)
    assert message.startswith("semi.csv.gz: the CSV header lacks column(s) ts (column 'date'), open, high, low, close;")
    assert "'date;open;high;low;close;volume'" in message and 'pass "delimiter": ";"' in message
    (source_dir / "novol.csv").write_text("ts,open,high,low,close\n2024-01-02,1,1,1,1\n")
    with pytest.raises(BadRequest, match=r"lacks column\(s\) volume; it has: 'ts', 'open'"):
        parse({"source": "novol.csv", "symbol": "X", "provider": "p", "interval": "1d"})
    assert parse({"source": "novol.csv", "symbol": "X", "provider": "p", "interval": "1d", "volume": "optional"})


def test_a_header_changed_after_the_trigger_fails_the_run_before_any_row_is_written(settings, source_dir):
    (source_dir / "later.csv").write_text("Date,Open,High,Low,Close\n2024-01-02,1,1,1,1\n")
    params = parse({"source": "later.csv", "preset": "stooq", "symbol": "X"})
    (source_dir / "later.csv").write_text("Date;Open;High;Low;Close\n2024-01-02;1;1;1;1\n")
    with pytest.raises(
        JobError, match=r'lacks column\(s\) ts \(column .date.\), open, high, low, close; .*"delimiter": ";"'
    ):
        run(settings, params)
    assert rows(settings.database_url) == []


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ({"preset": "bloomberg"}, "preset must be one of yahoo, stooq, polygon_aggs, binance_klines"),
        ({"preset": "yahoo"}, "symbol is required with preset yahoo"),
        ({"preset": "polygon_aggs"}, "interval is required with preset polygon_aggs"),
        ({"preset": "binance_klines", "symbol": "X"}, "interval is required with preset binance_klines"),
        ({"columns": {"price": "Close"}}, "columns: unknown field(s) price"),
        ({"columns": {"ts": "Date", "open": "date"}}, "columns: ts and open both map to column 'date'"),
        ({"columns": {"ts": 5}}, "columns.ts must be the file's column name"),
        ({"columns": "ts,open"}, "columns must be an object"),
        ({"columns": ["ts", "when"], "header": False}, "columns: 'when' is not a field"),
        ({"columns": ["ts", "ts"], "header": False}, "columns: a field appears twice"),
        ({"header": False}, 'header: false needs "columns" as a list'),
        ({"header": "no"}, "header must be true or false"),
        (
            {"columns": ["ts", "open", "high", "low", "close", "volume"], "header": False},
            "columns: the list has no provider, symbol, interval",
        ),
        ({"delimiter": ":"}, "delimiter must be one of"),
        ({"decimal": "'"}, 'decimal must be "." or ","'),
        ({"ts_format": "unix"}, "ts_format must be one of iso, epoch_s"),
        ({"ts_format": "%Q"}, "ts_format '%Q' is not a usable strftime pattern"),
        ({"timezone": "Mars/Olympus"}, "timezone 'Mars/Olympus' is not a known IANA zone"),
        ({"timezone": "Europe/Paris", "ts_format": "epoch_s"}, "timezone applies to times without an offset"),
        ({"volume": "maybe"}, 'volume must be "required" or "optional"'),
        ({"symbol": "a b,c"}, "symbol must be printable ASCII"),
        ({"source": "x.ndjson", "delimiter": ";"}, "delimiter applies to csv sources only"),
        ({"dry_run": "yes"}, "dry_run must be true or false"),
        ({"source": None, "sources": None}, "give either source"),
        ({"sources": ["ok.csv"]}, "give either source"),
    ],
)
def test_bad_layout_parameters_are_refused_at_trigger_time_naming_the_field(settings, source_dir, body, message):
    (source_dir / "ok.csv").write_text("ts\n")
    (source_dir / "x.ndjson").write_text("{}\n")
    with pytest.raises(BadRequest) as err:
        parse({"source": "ok.csv", **body})
    assert message in str(err.value)


# -- dry runs -------------------------------------------------------------------------------------
def snapshot(url: str) -> dict:
    """Every table of the database, row for row (as one digest per table)."""
    with psycopg.connect(url) as conn:
        tables = [
            r[0]
            for r in conn.execute(
                "SELECT format('%I.%I', schemaname, tablename) FROM pg_tables WHERE schemaname NOT IN "
                "('pg_catalog', 'information_schema') ORDER BY 1"
            )
        ]
        return {
            name: conn.execute(
                f"SELECT count(*), md5(coalesce(string_agg(t::text, '|' ORDER BY t::text), '')) FROM {name} t"
            ).fetchone()
            for name in tables
        }


def test_a_dry_run_reports_everything_and_changes_nothing(settings, source_dir):
    data = (
        "ticker,volume,open,close,high,low,window_start,transactions\n"
        "AAPL,100,10,10.5,11,9.5,1709303400000000000,5\n"
        "AAPL,100,10,12,11,9.5,1709303460000000000,5\n"  # close > high
        "MSFT,200,20,20.5,21,19.5,1709908200000000000,5\n"  # the week after
        "MSFT,x,20,20.5,21,19.5,1709908260000000000,5\n"
    )
    before = snapshot(settings.database_url)
    result = load(settings, source_dir, "day.csv", data, preset="polygon_aggs", interval="1m", dry_run=True)
    assert snapshot(settings.database_url) == before
    assert result["verdict"] == "would fail"
    assert (result["rows_read"], result["rows_good"], result["rows_rejected"]) == (4, 2, 2)
    assert result["bad_rows"] == [
        {"line": 3, "reason": "close 12.0 > high 11.0"},
        {"line": 5, "reason": "volume is not a number: 'x'"},
    ]
    assert result["symbol_names"] == ["AAPL", "MSFT"] and result["providers"] == ["polygon"]
    assert result["intervals"] == ["1m"]
    assert (result["min_ts"], result["max_ts"]) == ("2024-03-01T14:30:00+00:00", "2024-03-08T14:30:00+00:00")
    assert result["partitions_to_create"] == [
        {"from": "2024-02-29T00:00:00+00:00", "to": "2024-03-07T00:00:00+00:00"},
        {"from": "2024-03-07T00:00:00+00:00", "to": "2024-03-14T00:00:00+00:00"},
    ]
    assert "a load would fail: 2 bad rows" in result["warnings"][0]


# -- progress from the first second ---------------------------------------------------------------
def test_progress_moves_before_the_first_batch_commits(settings):
    """A URL that delivers half its rows and then stalls: progress already shows the bytes
    and rows read, the percentage and the phase, with nothing committed yet."""
    import threading
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

    head = "".join(f"P{i // 60},2024-03-01T00:{i % 60:02d}:00Z,1,2,0.5,1.5,10\n" for i in range(200))
    body = ("symbol,ts,open,high,low,close,volume\n" + head).encode()
    tail = "".join(f"Q{i // 60},2024-03-02T00:{i % 60:02d}:00Z,1,2,0.5,1.5,10\n" for i in range(200)).encode()
    release = threading.Event()

    class Stalling(BaseHTTPRequestHandler):
        def do_GET(self):
            self.send_response(200)
            self.send_header("Content-Length", str(len(body) + len(tail)))
            self.end_headers()
            self.wfile.write(body)
            self.wfile.flush()
            release.wait(60)
            self.wfile.write(tail)

        def log_message(self, *args):
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Stalling)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    ctx = job_context(settings)
    params = parse({"source": f"http://127.0.0.1:{server.server_address[1]}/s.csv", "provider": "p", "interval": "1m"})
    outcome = {}
    job = threading.Thread(target=lambda: outcome.update(result=backfill.run_bars(ctx, params)))
    job.start()
    try:
        progress = wait_for(
            lambda: (p := ctx.snapshot_progress()).get("bytes_read", 0) >= len(body) and p.get("rows_read") and p,
            30,
            message="progress while the source stalls",
        )
        assert progress["phase"] == "reading" and progress["rows_written"] == 0
        assert progress["bytes_total"] == len(body) + len(tail) and 0 < progress["percent"] < 100
        assert set(progress) >= {"rows_unchanged", "rows_rejected", "rows_per_s", "eta_s"}
    finally:
        release.set()
        job.join(60)
        server.shutdown()
        server.server_close()
    assert outcome["result"]["rows_written"] == 400
    assert ctx.snapshot_progress()["rows_written"] == 400
    assert runner.PROGRESS_EVERY <= 2  # the heartbeat thread writes changed progress this often

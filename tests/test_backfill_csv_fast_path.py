"""The CSV fast path (`Layout.csv_line`): one regular expression per line instead of the
per-field checks. Every line must come out exactly as the careful path makes it: the
same stored values, the same bad rows with the same reasons."""

from __future__ import annotations

import io
import itertools
from datetime import UTC, datetime

import pytest

from app.backfill import layout as layouts
from app.backfill.layout import Layout
from app.backfill.rows import Reader, micros_to_datetime
from tests.support.copy_rows import decode

NUMBERS = [
    "1", "1.5", "+1.5", "-1.5", ".5", "5.", "1e3", "1E+2", "1.5e-3", "0", "00012.50",
    "1" * 30, "1" * 31, "1." + "0" * 25, "1." + "0" * 26, "1e99", "1e100", "1e999",
    " 2.5", "2.5 ", "", "1_000", "١٢", "nan", "inf", "0x10", "1,5", "1.2.3", "--1", "+", ".",
]  # fmt: skip


def _read(data: bytes, lay: Layout, slow: bool, monkeypatch: pytest.MonkeyPatch, **kw):
    if slow:  # the careful path only: a line pattern that never matches
        monkeypatch.setattr(Layout, "csv_line", lambda self, h, c: ((lambda text: None), None))
    reader = Reader(io.BufferedReader(io.BytesIO(data)), "csv", batch_rows=10_000, max_bad_rows=10**6, layout=lay, **kw)
    batches = list(reader.batches())
    monkeypatch.undo()
    rows = b"".join(c for b in batches for c in b.chunks)
    bad = [(s["line"], s["reason"]) for b in batches for s in b.samples]
    return rows, bad, reader.bad, [b.stamps for b in batches]


def _same(data: bytes, lay: Layout, monkeypatch: pytest.MonkeyPatch, **kw) -> tuple:
    fast = _read(data, lay, False, monkeypatch, **kw)
    slow = _read(data, lay, True, monkeypatch, **kw)
    assert fast == slow
    return fast


@pytest.mark.parametrize("volume", ["required", "optional"])
def test_every_number_form_comes_out_as_the_careful_path_makes_it(monkeypatch, volume):
    lines = [b"provider,symbol,interval,ts,open,high,low,close,volume"]
    for n, (a, b) in enumerate(itertools.product(NUMBERS, ["2", "1e3"])):
        ts = f"2024-01-02T03:{n // 60 % 60:02d}:{n % 60:02d}Z"
        lines.append(f"p,AAPL,1m,{ts},{a},{b},0,1,{a}".encode())
        lines.append(f"p,AAPL,1m,{ts},1,{b},{a},1,7".encode())
    lines.append(b'p,"AAPL",1m,2024-01-02T04:00:00Z,1,2,0,1,5')
    lines.append(b"p,AAPL,1m,2024-01-02T04:00:01Z,1,2,0,1,5,extra")
    lines.append(b"p,AAPL,1m,2024-01-02T04:00:02Z,1,2,0,1\r")
    lines.append(b"p,AAPL,1m,2024-01-02T04:00:03Z,1,2,0,1,5\r\r")
    lines.append(b"")
    rows, bad, rejected, _ = _same(b"\n".join(lines) + b"\n", Layout(volume_optional=volume == "optional"), monkeypatch)
    assert rows and bad and rejected > 20  # both kinds are exercised


def test_a_preset_layout_with_decimal_commas_and_semicolons_comes_out_the_same(monkeypatch):
    lay = Layout.from_params(
        {"columns": {"ts": "Datum", "open": "Eröffnung", "high": "Hoch", "low": "Tief", "close": "Schluss",
                     "volume": "Volumen"}, "delimiter": ";", "decimal": ",", "symbol": "SAP"}
    )  # fmt: skip
    lines = [b"Datum;Er\xc3\xb6ffnung;Hoch;Tief;Schluss;Volumen;Extra"]
    for n, number in enumerate(n.replace(".", ",") for n in NUMBERS):
        lines.append(f"2024-01-{n % 28 + 1:02d};1,5;{number};0,5;1;{number};x,y".encode())
    rows, bad, _, _ = _same(b"\n".join(lines) + b"\n", lay, monkeypatch, provider="boerse", interval="1d")
    assert rows and bad


def test_the_polygon_preset_comes_out_the_same_and_the_fast_path_takes_plain_lines(monkeypatch):
    lay, _ = layouts.parse({"preset": "polygon_aggs", "interval": "1m"})
    lines = [b"ticker,volume,open,close,high,low,window_start,transactions"]
    for k in range(200):
        lines.append(f"AAPL,{1000 + k},{100 + k / 7!r},{100.5 + k / 7!r},{101 + k / 7!r},{99 + k / 7!r},"
                     f"{(1704067200 + 60 * k) * 10**9},{k}".encode())  # fmt: skip
    lines.append(b"AAPL,,1,1,1,1,1704067200000000000,3")  # no volume: a bad row either way
    data = b"\n".join(lines) + b"\n"
    rows, bad, _, stamps = _same(data, lay, monkeypatch, provider="polygon", interval="1m")
    decoded = decode([rows])
    assert len(decoded) == 200 and len(bad) == 1
    assert decoded[0][:4] == ["polygon", "AAPL", "1m", datetime(2024, 1, 1, tzinfo=UTC)]
    assert decoded[0][4:] == [100.0, 101.0, 99.0, 100.5, 1000.0]
    assert micros_to_datetime(min(stamps[0])) == datetime(2024, 1, 1, tzinfo=UTC)
    matched = layouts.Layout.csv_line(lay, lines[0].decode().split(","), {"interval": "1m", "provider": "polygon"})[0]
    assert all(matched(line.decode() + "\n") for line in lines[1:201])

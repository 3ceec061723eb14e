"""CSV read a block at a time (app/backfill/csvlines.py): records, line numbers and byte
offsets exact across block boundaries, quoted newlines kept, line length bounded."""

from __future__ import annotations

import io

import pytest

from app.backfill import csvlines
from app.backfill.csvlines import CsvLines
from app.backfill.sources import SourceError

DATA = (
    b'a,"multi\nline",1\r\n'  # lines 1-2
    b"\r\n"  # 3: blank
    b'b,"lone\rcr",2\n'  # 4
    b"c,plain,3\n"  # 5
    b"d,no newline at the end,4"  # 6
)


@pytest.mark.parametrize("block", [1, 7, 64, 1 << 20])
def test_records_lines_and_offsets_are_exact_whatever_the_block_size(monkeypatch, block):
    monkeypatch.setattr(csvlines, "BLOCK", block)
    lines = CsvLines(io.BytesIO(DATA), 10, 100, ",")
    seen = []
    for record in lines.reader:
        seen.append((record, lines.line(), lines.offset()))
    ends = [i + 1 for i, c in enumerate(DATA) if c == 10]
    assert seen == [
        (["a", "multi\nline", "1"], 12, 100 + ends[1]),
        ([], 13, 100 + ends[2]),
        (["b", "lone\rcr", "2"], 14, 100 + ends[3]),
        (["c", "plain", "3"], 15, 100 + ends[4]),
        (["d", "no newline at the end", "4"], 16, 100 + len(DATA)),
    ]


def test_a_line_without_end_is_refused_past_the_bound(monkeypatch):
    monkeypatch.setattr(csvlines, "BLOCK", 1000)
    lines = CsvLines(io.BytesIO(b"ok,1\n" + b"x" * 5000), 0, 0, ",", max_line=3000)
    assert next(lines.reader) == ["ok", "1"]
    with pytest.raises(SourceError, match="line 2 is longer than 3000 bytes"):
        next(lines.reader)

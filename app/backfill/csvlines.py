"""CSV lines for `csv.reader` a block at a time, with line numbers and byte offsets.

The stream is read in blocks of BLOCK bytes; each block is cut after its last newline,
decoded and split in C, and `csv.reader` iterates the pieces through
`itertools.chain` without a Python frame per line. What a checkpoint needs is still
exact: `line()` is the number of physical lines consumed (from `csv.reader.line_num`, so
quoted fields spanning lines count right), and `offset()` the bytes consumed up to that
line, from the block's cumulative line lengths. A line longer than `max_line` bytes (no
newline in sight) is an error instead of an unbounded read.
"""

from __future__ import annotations

import csv
from collections.abc import Iterator
from itertools import accumulate, chain
from typing import Any

from app.backfill.sources import SourceError

BLOCK = 1 << 20
MAX_LINE = 16 << 20  # bytes of one physical line


class CsvLines:
    def __init__(self, stream: Any, line: int, offset: int, delimiter: str, max_line: int = MAX_LINE):
        self.stream = stream
        self.max_line = max_line
        self._line0 = line  # lines before the first one read here
        self._first = 0  # reader.line_num at the start of the current block
        self._start = offset  # byte offset of the current block
        self._ends: list[int] = [0]  # cumulative byte length of the block's lines
        self.reader = csv.reader(chain.from_iterable(self._blocks()), strict=True, delimiter=delimiter)

    def line(self) -> int:
        return self._line0 + self.reader.line_num

    def offset(self) -> int:
        return self._start + self._ends[self.reader.line_num - self._first]

    def _blocks(self) -> Iterator[list[str]]:
        leftover = b""
        consumed = 0  # lines handed out before the current block
        while True:
            data = self.stream.read(BLOCK)
            if data:
                data = leftover + data
                cut = data.rfind(b"\n") + 1
                if cut == 0:
                    if len(data) > self.max_line:
                        raise SourceError(
                            f"line {self._line0 + consumed + 1} is longer than {self.max_line} bytes; "
                            "is this a CSV file (or the right delimiter)?"
                        )
                    leftover = data
                    continue
                block, leftover = data[:cut], data[cut:]
                pieces = block.split(b"\n")[:-1]
                sizes = [n + 1 for n in map(len, pieces)]
            elif leftover:  # the last line has no newline
                block, leftover = leftover, b""
                pieces, sizes = [block], [len(block)]
            else:
                return
            self._start += self._ends[-1]
            self._ends = [0, *accumulate(sizes)]
            self._first = consumed
            consumed += len(pieces)
            # newlines kept: csv.reader needs them inside quoted fields that span lines
            text = block.decode("utf-8", "replace")
            lines = text.splitlines(keepends=True)
            if len(lines) != len(pieces):  # other line breaks (a lone \r, \x0c, ...) in the block
                lines = [p + "\n" for p in text.split("\n")[: len(pieces)]]
                if not block.endswith(b"\n"):
                    lines[-1] = lines[-1][:-1]
            yield lines

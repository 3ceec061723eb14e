"""Reading the backfill's binary COPY chunks back (app/backfill/rows.py `encode`)."""

from __future__ import annotations

import struct

from app.backfill.rows import micros_to_datetime


def decode(chunks: list[bytes]) -> list[list]:
    """Binary COPY tuples -> rows `[provider, symbol, interval, ts (datetime), open, high,
    low, close, volume]`."""
    rows = []
    for chunk in chunks:
        view, at = memoryview(chunk), 0
        while at < len(view):
            (count,) = struct.unpack_from(">h", view, at)
            at += 2
            row: list = []
            for k in range(count):
                (size,) = struct.unpack_from(">i", view, at)
                at += 4
                if size < 0:
                    row.append(None)
                    continue
                data = bytes(view[at : at + size])
                at += size
                if k < 3:
                    row.append(data.decode())
                elif k == 3:
                    row.append(micros_to_datetime(struct.unpack(">q", data)[0]))
                else:
                    row.append(struct.unpack(">d", data)[0])
            rows.append(row)
    return rows

"""A backfill's `progress` document, from its first second.

`Progress.update` merges the counts a job knows into the job's progress (the runner's
heartbeat thread writes it to the ledger at least every 2 s) and adds what follows from
the source's bytes: `bytes_read`, `bytes_total` (when known), `percent`, `rows_per_s`
and `eta_s`. The job calls it whenever it waits (every fraction of a second) and after
every committed batch, so a slow source or a long first batch still shows movement.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from app.backfill.rows import Reader
    from app.backfill.sources import Opened


class Progress:
    def __init__(
        self, publish: Callable[..., None], opened: Opened, reader: Reader, phase: str = "reading", rows_before: int = 0
    ):
        """`publish(**fields)`: where the progress goes (the job's progress)."""
        self.publish = publish
        self.opened = opened
        self.reader = reader
        self.phase = phase
        self._t0 = time.monotonic()
        self._bytes0 = opened.bytes_read
        self._line0 = reader.line
        self._rows0 = rows_before  # rows a resumed run took over
        self._counts: dict = {}
        self.update()

    def update(self, phase: str | None = None, **counts: Any) -> None:
        """Merge `counts` (rows_read, rows_written, rows_unchanged, rows_rejected, ...) and publish."""
        if phase is not None:
            self.phase = phase
        self._counts.update(counts)
        elapsed = max(time.monotonic() - self._t0, 1e-6)
        done = self.opened.bytes_read
        total = self.opened.size
        lines_now = self.reader.line - self._line0  # rows read so far by this run (read-ahead included)
        rate = lines_now / elapsed if elapsed >= 0.5 else None
        byte_rate = (done - self._bytes0) / elapsed
        percent = eta = None
        if total:
            percent = round(min(100.0, 100.0 * done / total), 1)
            eta = round((total - done) / byte_rate, 1) if byte_rate > 0 and done < total else 0.0
        doc = {
            "phase": self.phase,
            "bytes_read": done,
            "bytes_total": total,
            "percent": percent,
            "rows_per_s": round(rate, 1) if rate is not None else None,
            "eta_s": eta,
            "rows_read": max(self._counts.get("rows_read", 0), self._rows0 + lines_now),
            "rows_written": 0,
            "rows_unchanged": 0,
            "rows_rejected": 0,
            "line": self.reader.line,
        }
        doc.update({k: v for k, v in self._counts.items() if k != "rows_read"})
        self.publish(**doc)

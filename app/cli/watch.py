"""Following a job to its end: a live rich bar on a terminal, plain lines otherwise.

The job document (GET /jobs/<run_id>) is polled every `interval` seconds. A job that
reports `bytes_read`/`bytes_total` and `rows_read` (a backfill) gets a bar with percent,
rows, bytes, rate and ETA (see `Measure`); any other job a spinner with its phase and
counters. Progress goes to
stderr, so stdout stays the summary (or the API's JSON with --json).
"""

from __future__ import annotations

import time

from rich.console import Console
from rich.progress import (
    BarColumn,
    Progress,
    SpinnerColumn,
    TaskProgressColumn,
    TextColumn,
    TimeElapsedColumn,
)

from app.cli.client import Client

FINAL = ("success", "failed", "cancelled")
PLAIN_EVERY_S = 2.0  # plain mode: at most one progress line this often (status changes always print)


def _num(value: object) -> str:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return str(value)
    return f"{value:,.0f}" if float(value).is_integer() or abs(value) >= 100 else f"{value:,.2f}"


def phase_text(doc: dict, limit: int = 70) -> str:
    """One line from a job's progress: its scalar fields, phase and table first."""
    progress = doc.get("progress") or {}
    if not isinstance(progress, dict):
        return ""
    skip = {"bytes_read", "bytes_total", "rate", "line"}
    keys = [k for k in ("table", "phase") if k in progress] + sorted(k for k in progress if k not in ("table", "phase"))
    parts = []
    for key in keys:
        value = progress[key]
        if key in skip or isinstance(value, dict | list) or value is None:
            continue
        parts.append(str(value) if key in ("table", "phase") else f"{key.replace('_', ' ')} {_num(value)}")
    text = " · ".join(parts)
    return text if len(text) <= limit else text[: limit - 1] + "…"


class Measure:
    """How far a load is, in rows, and when it will end.

    A backfill reports the source bytes its reader has read (`bytes_read` of
    `bytes_total`) and the rows committed (`rows_read`). The reader runs ahead of the
    database by the batches in its pipeline (one being read, one queued, two being
    written: about `PIPELINE_BATCHES` x `batch_rows` rows), so bytes alone reach 100% while the last
    batches are still being written. The total is therefore estimated in rows: the rows
    the reader has passed (committed + the pipeline) scaled from the bytes read to the
    whole source, held once the source is fully read. The ETA is the rows left over the
    committed-rows rate seen since watching began. Jobs without these fields get no
    measure (a spinner with their phase instead).
    """

    PIPELINE_BATCHES = 4  # app/backfill/bars.py: QUEUE_BATCHES (1) + WRITERS (2) + the one being read

    def __init__(self) -> None:
        self.total: int | None = None
        self.held = False  # the source is fully read: the estimate no longer moves
        self.first: tuple[float, int] | None = None  # (time, rows) when watching began

    def update(self, now: float, doc: dict) -> tuple[int, int] | None:
        """(rows done, rows total estimate), or None when the job reports no sizes."""
        raw = doc.get("progress")
        progress: dict = raw if isinstance(raw, dict) else {}
        sized, rows = _bytes(progress), progress.get("rows_read")
        if sized is None or not isinstance(rows, int):
            return None
        if self.first is None or rows < self.first[1]:
            self.first = (now, rows)
        if doc.get("status") == "success":
            self.total, self.held = rows, True
        elif not self.held and sized[0] > 0:
            params = doc.get("params")
            batch = params.get("batch_rows") if isinstance(params, dict) else None
            batch = batch if isinstance(batch, int) else 0
            passed = rows + self.PIPELINE_BATCHES * batch
            self.total = int(passed * sized[1] / sized[0])
            self.held = sized[0] >= sized[1]
        if self.total is None:
            return None
        return rows, max(self.total, rows)

    def eta(self, now: float, rows: int, total: int) -> float | None:
        if self.first is None:
            return None
        seconds, moved = now - self.first[0], rows - self.first[1]
        if seconds <= 0 or moved <= 0:
            return None
        return max(0.0, (total - rows) / (moved / seconds))


def _bytes(progress: dict) -> tuple[int, int] | None:
    done, total = progress.get("bytes_read"), progress.get("bytes_total")
    if isinstance(done, int) and isinstance(total, int) and total > 0:
        return min(done, total), total
    return None


def _clock(seconds: float | None) -> str:
    if seconds is None:
        return "-:--:--"
    seconds = int(seconds + 0.5)
    return f"{seconds // 3600}:{seconds % 3600 // 60:02d}:{seconds % 60:02d}"


def _read(progress: dict) -> str:
    sized = _bytes(progress)
    return f"{sized[0] / 1e6:,.1f}/{sized[1] / 1e6:,.1f} MB read" if sized else ""


def plain_line(doc: dict, measure: Measure, now: float) -> str:
    raw = doc.get("progress")
    progress: dict = raw if isinstance(raw, dict) else {}
    parts = [doc["status"]]
    measured = measure.update(now, doc)
    if measured:
        rows, total = measured
        parts.append(f"{100 * rows / total if total else 100:.0f}%  rows {_num(rows)} of ~{_num(total)}")
        parts.append(_read(progress))
        if doc["status"] == "running":
            parts.append(f"ETA {_clock(measure.eta(now, rows, total))}")
    elif "rows_read" in progress:
        parts.append(f"rows {_num(progress['rows_read'])}")
    if isinstance(progress.get("rate"), int | float):
        parts.append(f"{_num(progress['rate'])} rows/s")
    if not measured and "rows_read" not in progress and progress:
        parts.append(phase_text(doc))
    return "  ".join(p for p in parts if p)


class Watcher:
    """Poll one job until it ends; show it on `err` (a rich Console on stderr)."""

    def __init__(self, client: Client, err: Console, interval: float = 1.0):
        self.client, self.err, self.interval = client, err, interval

    def fetch(self, run_id: str) -> dict:
        return self.client.get(f"/jobs/{run_id}")

    def follow(self, run_id: str) -> dict:
        if self.err.is_terminal:
            return self._live(run_id)
        return self._plain(run_id)

    def _plain(self, run_id: str) -> dict:
        measure, last_status, last_line, last_at = Measure(), None, None, 0.0
        while True:
            doc = self.fetch(run_id)
            now = time.monotonic()
            line = plain_line(doc, measure, now)
            changed = doc["status"] != last_status
            if changed or (line != last_line and now - last_at >= PLAIN_EVERY_S):
                self.err.print(f"{time.strftime('%H:%M:%S')} {doc['job']} {line}", markup=False, highlight=False)
                last_status, last_line, last_at = doc["status"], line, now
            if doc["status"] in FINAL:
                return doc
            time.sleep(self.interval)

    def _live(self, run_id: str) -> dict:
        columns = (
            SpinnerColumn(),
            TextColumn("{task.description}"),
            BarColumn(bar_width=30),
            TaskProgressColumn(),
            TextColumn("{task.fields[detail]}"),
            TextColumn("{task.fields[eta]}"),
            TimeElapsedColumn(),
        )
        measure = Measure()
        with Progress(*columns, console=self.err, transient=False, refresh_per_second=8) as bar:
            task = bar.add_task(run_id, total=None, detail="", eta="")
            while True:
                doc = self.fetch(run_id)
                raw = doc.get("progress")
                progress: dict = raw if isinstance(raw, dict) else {}
                now = time.monotonic()
                measured = measure.update(now, doc)
                detail = [_read(progress)]
                if "rows_read" in progress:
                    total = f" of ~{_num(measured[1])}" if measured and doc["status"] != "success" else ""
                    detail.append(f"{_num(progress['rows_read'])}{total} rows")
                if isinstance(progress.get("rate"), int | float):
                    detail.append(f"{_num(progress['rate'])} rows/s")
                text = " · ".join(d for d in detail if d)
                label = " ".join(p for p in (doc["job"], doc["status"], "" if text else phase_text(doc)) if p)
                eta = ""
                if measured and doc["status"] == "running":
                    eta = f"ETA {_clock(measure.eta(now, *measured))}"
                if measured:
                    bar.update(task, description=label, total=measured[1], completed=measured[0], detail=text, eta=eta)
                else:
                    bar.update(task, description=label, detail=text, eta=eta)
                if doc["status"] in FINAL:
                    bar.stop_task(task)
                    return doc
                time.sleep(self.interval)

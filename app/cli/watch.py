"""Following a job to its end: a live rich bar on a terminal, plain lines otherwise.

The job document (GET /jobs/<run_id>) is polled every `interval` seconds. A job that
reports `bytes_read`/`bytes_total` (a backfill) gets a bar with percent, bytes, rows,
rate and ETA; any other job a spinner with its phase and counters. Progress goes to
stderr, so stdout stays the summary (or the API's JSON with --json).
"""

from __future__ import annotations

import time
from dataclasses import dataclass

from rich.console import Console
from rich.progress import (
    BarColumn,
    DownloadColumn,
    Progress,
    SpinnerColumn,
    TaskProgressColumn,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)

from app.cli.client import Client

FINAL = ("success", "failed", "cancelled")
PLAIN_EVERY_S = 2.0  # plain mode: at most one progress line this often (status changes always print)


def _num(value) -> str:
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


@dataclass
class Eta:
    """Seconds left from the bytes rate seen since watching began (None until it is known)."""

    first: tuple[float, int] | None = None

    def update(self, now: float, done: int, total: int) -> float | None:
        if self.first is None or done < self.first[1]:
            self.first = (now, done)
            return None
        seconds, moved = now - self.first[0], done - self.first[1]
        if seconds <= 0 or moved <= 0:
            return None
        return max(0.0, (total - done) / (moved / seconds))


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


def plain_line(doc: dict, eta: Eta, now: float) -> str:
    progress = doc.get("progress") or {}
    parts = [doc["status"]]
    if isinstance(progress, dict):
        if "rows_read" in progress:
            parts.append(f"rows {_num(progress['rows_read'])}")
        sized = _bytes(progress)
        if sized:
            done, total = sized
            parts.append(f"{done / 1e6:,.1f}/{total / 1e6:,.1f} MB {100 * done / total:.0f}%")
            parts.append(f"ETA {_clock(eta.update(now, done, total))}")
        if isinstance(progress.get("rate"), int | float):
            parts.append(f"{_num(progress['rate'])} rows/s")
        if not sized and "rows_read" not in progress and progress:
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
        eta, last_status, last_line, last_at = Eta(), None, None, 0.0
        while True:
            doc = self.fetch(run_id)
            now = time.monotonic()
            line = plain_line(doc, eta, now)
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
            DownloadColumn(),
            TextColumn("{task.fields[rows]}"),
            TextColumn("{task.fields[rate]}"),
            TextColumn("ETA"),
            TimeRemainingColumn(),
            TimeElapsedColumn(),
        )
        with Progress(*columns, console=self.err, transient=False, refresh_per_second=8) as bar:
            task = bar.add_task("queued", total=None, rows="", rate="")
            while True:
                doc = self.fetch(run_id)
                raw = doc.get("progress")
                progress: dict = raw if isinstance(raw, dict) else {}
                sized = _bytes(progress)
                rows = f"{_num(progress['rows_read'])} rows" if "rows_read" in progress else ""
                rate = f"{_num(progress['rate'])} rows/s" if isinstance(progress.get("rate"), int | float) else ""
                label = " ".join(p for p in (doc["job"], doc["status"], "" if sized or rows else phase_text(doc)) if p)
                if doc["status"] == "success" and sized:
                    sized = (sized[1], sized[1])
                if sized:
                    bar.update(task, description=label, total=sized[1], completed=sized[0], rows=rows, rate=rate)
                else:
                    bar.update(task, description=label, rows=rows, rate=rate)
                if doc["status"] in FINAL:
                    bar.stop_task(task)
                    return doc
                time.sleep(self.interval)

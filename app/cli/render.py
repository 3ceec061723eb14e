"""How the CLI shows API documents to people. Every API value is printed as text (never
as rich markup), so a value such as "[red]x" or "<script>" shows literally."""

from __future__ import annotations

import json
from datetime import datetime

from rich.console import Console
from rich.table import Table
from rich.text import Text

MARKS = {"success": "✔", "failed": "✘", "cancelled": "■", "running": "…", "queued": "·"}
STYLES = {"success": "green", "failed": "red", "cancelled": "yellow", "running": "cyan", "queued": "dim"}
SUMMARY_LINES = 18


def text(value: object, style: str | None = None) -> Text:
    if value is None:
        return Text("–", style="dim")
    if isinstance(value, bool):
        value = "true" if value else "false"
    elif isinstance(value, dict | list):
        value = json.dumps(value, separators=(",", ":"), ensure_ascii=False)
    elif isinstance(value, float):
        value = f"{value:,.2f}"
    elif isinstance(value, int) and not isinstance(value, bool):
        value = f"{value:,}"
    return Text(str(value), style=style or "")


def status(value: str) -> Text:
    return Text(f"{MARKS.get(value, '?')} {value}", style=STYLES.get(value, ""))


def table(title: str | None, columns: list[str], rows: list[list]) -> Table:
    out = Table(title=title, title_justify="left", show_edge=False, pad_edge=False, header_style="bold")
    for name in columns:
        out.add_column(name, overflow="fold")
    for row in rows:
        out.add_row(*[cell if isinstance(cell, Text) else text(cell) for cell in row])
    return out


def when(iso: str | None) -> str:
    """An ISO time as `YYYY-MM-DD HH:MM:SS` (its own offset kept out of the way)."""
    if not iso:
        return "–"
    try:
        return datetime.fromisoformat(iso).strftime("%Y-%m-%d %H:%M:%S")
    except ValueError:
        return iso


def duration(doc: dict, now: datetime | None = None) -> str:
    """How long a job ran (or has run so far), as `1m 05s`."""
    seconds = doc.get("duration_s")
    if not isinstance(seconds, int | float):
        try:
            start = datetime.fromisoformat(doc["started_at"]) if doc.get("started_at") else None
            end = datetime.fromisoformat(doc["finished_at"]) if doc.get("finished_at") else now
        except ValueError:
            return "–"
        if start is None or end is None:
            return "–"
        seconds = (end - start).total_seconds()
    seconds = max(0.0, float(seconds))
    if seconds < 60:
        return f"{seconds:.1f} s"
    minutes, rest = divmod(int(seconds + 0.5), 60)
    return f"{minutes // 60}h {minutes % 60:02d}m" if minutes >= 60 else f"{minutes}m {rest:02d}s"


def percent(doc: dict) -> str:
    progress = doc.get("progress") if isinstance(doc.get("progress"), dict) else {}
    done, total = (progress or {}).get("bytes_read"), (progress or {}).get("bytes_total")
    if doc.get("status") == "success":
        return "100%" if total else ""
    if isinstance(done, int) and isinstance(total, int) and total > 0:
        return f"{min(100, 100 * done // total)}%"
    return ""


def summary(out: Console, doc: dict) -> None:
    """The one-screen end of a watched job: outcome, time, error, result fields, warnings."""
    head = Text.assemble(
        status(doc["status"]), " ", Text(doc["job"], style="bold"), f"  in {duration(doc)}  run {doc['run_id']}"
    )
    out.print(head)
    if doc.get("error"):
        out.print(Text.assemble(Text("error: ", style="red bold"), Text(str(doc["error"]))))
    result = doc.get("result") if isinstance(doc.get("result"), dict) else {}
    lines = 0
    for key, value in (result or {}).items():
        if key == "warnings" or lines >= SUMMARY_LINES:
            continue
        rendered = text(value).plain
        if len(rendered) > 100:
            rendered = rendered[:99] + "…"
        out.print(Text.assemble(Text(f"  {key}: ", style="dim"), Text(rendered)))
        lines += 1
    if len(result or {}) > lines + (1 if "warnings" in (result or {}) else 0):
        out.print(Text(f"  … more in: mds jobs show {doc['run_id']}", style="dim"))
    for warning in (result or {}).get("warnings") or []:
        out.print(Text.assemble(Text("warning: ", style="yellow bold"), Text(str(warning))))

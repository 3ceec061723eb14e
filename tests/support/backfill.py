"""Backfill sources as vendors publish them (NDJSON, gzip, CSV), and what the table must hold."""

from __future__ import annotations

import gzip
import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

import psycopg

START = datetime(2024, 2, 5, tzinfo=UTC)


def bars(n: int, symbols=("aaa", "bbb"), start: datetime = START, provider: str = "prov") -> list[dict]:
    """`n` valid one-minute bars, symbol by symbol in turn."""
    out = []
    for i in range(n):
        o = 100 + (i % 50) * 0.5
        out.append(
            {
                "provider": provider,
                "symbol": symbols[i % len(symbols)],
                "interval": "1m",
                "ts": (start + timedelta(minutes=i // len(symbols))).strftime("%Y-%m-%dT%H:%M:%SZ"),
                "open": o,
                "high": o + 1,
                "low": o - 1,
                "close": o + 0.25,
                "volume": float(i),
            }
        )
    return out


def write_ndjson(path: Path, rows: list, compress: bool = False) -> Path:
    data = b"".join((r if isinstance(r, bytes) else json.dumps(r).encode()) + b"\n" for r in rows)
    path.write_bytes(gzip.compress(data) if compress else data)
    return path


def write_csv(path: Path, rows: list[dict]) -> Path:
    cols = ["provider", "symbol", "interval", "ts", "open", "high", "low", "close", "volume"]
    lines = [",".join(cols)] + [",".join(str(r[c]) for c in cols) for r in rows]
    path.write_text("\n".join(lines) + "\n")
    return path


def expected(rows: list[dict]) -> tuple:
    """What the table must hold for these rows: count, symbols, min/max ts, sums."""
    times = [datetime.fromisoformat(r["ts"]) for r in rows]
    return (
        len(rows),
        sorted({r["symbol"].upper() for r in rows}),
        min(times),
        max(times),
        round(sum(r["close"] for r in rows), 6),
        round(sum(r["volume"] for r in rows), 6),
    )


def stored(url: str, symbols) -> tuple:
    with psycopg.connect(url) as conn:
        n, syms, lo, hi, closes, volumes = conn.execute(
            """SELECT count(*), array_agg(DISTINCT symbol ORDER BY symbol), min(ts), max(ts), sum(close), sum(volume)
               FROM bars_ohlcv WHERE symbol = ANY(%s)""",
            ([s.upper() for s in symbols],),
        ).fetchone()
    return n, syms or [], lo, hi, round(closes or 0, 6), round(volumes or 0, 6)


def job_context(settings, kind: str = "backfill.bars_ohlcv"):
    """What the runner hands a backfill job, for running it in-process."""
    import time
    import uuid

    import structlog

    from app.jobs.base import JobContext

    return JobContext(
        run_id=str(uuid.uuid4()),
        kind=kind,
        settings=settings,
        log=structlog.get_logger("test"),
        deadline=time.monotonic() + 120,
    )

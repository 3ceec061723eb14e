"""Backfill checkpoints: where a load of one source stopped (table from migration 0011).

`advance` runs inside each batch's transaction, so the checkpoint and the rows it
counts commit together: a run that dies resumes at exactly the first uncommitted row.
A session advisory lock per source keeps two runs from loading the same source at once.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from datetime import datetime

import psycopg
from psycopg.rows import dict_row
from psycopg.types.json import Jsonb

from app.db import scalar

LOCK_CLASS = 0x4D44_5342  # advisory lock namespace of backfill sources ('MDSB')


@dataclass
class State:
    """Cumulative counts of one load of a source (carried over when it resumes)."""

    line: int = 0
    byte_offset: int = 0
    header: list[str] | None = None
    rows_read: int = 0
    rows_written: int = 0
    rows_rejected: int = 0
    bad_samples: list[dict] = field(default_factory=list)
    symbols: set[str] = field(default_factory=set)
    providers: set[str] = field(default_factory=set)
    min_ts: datetime | None = None
    max_ts: datetime | None = None
    batches: int = 0


@dataclass
class Checkpoint:
    source_key: str
    fingerprint: str
    identity: dict
    status: str
    state: State
    run_id: str | None
    job_run_id: int | None
    group: str | None = None  # the fan-out group whose child finished it (migration 0050)


def source_key(job: str, kind: str, location: str) -> str:
    return f"{job}:{kind}:{location}"


def fingerprint(**shape: object) -> str:
    """Hash of the parameters that shape the rows (a resume needs the same ones)."""
    return hashlib.sha256(json.dumps(shape, sort_keys=True).encode()).hexdigest()[:16]


def try_lock(conn: psycopg.Connection, key: str) -> bool:
    """Session lock on the source; held until unlock or the session ends."""
    return scalar(conn, "SELECT pg_try_advisory_lock(%s, hashtext(%s))", (LOCK_CLASS, key))


def unlock(conn: psycopg.Connection, key: str) -> None:
    conn.execute("SELECT pg_advisory_unlock(%s, hashtext(%s))", (LOCK_CLASS, key))


def load(conn: psycopg.Connection, key: str) -> Checkpoint | None:
    with conn.cursor(row_factory=dict_row) as cur:
        row = cur.execute("SELECT * FROM store_backfill_checkpoints WHERE source_key = %s", (key,)).fetchone()
    if row is None:
        return None
    state = State(
        line=row["line"],
        byte_offset=row["byte_offset"],
        header=row["header"],
        rows_read=row["rows_read"],
        rows_written=row["rows_written"],
        rows_rejected=row["rows_rejected"],
        bad_samples=row["bad_samples"],
        symbols=set(row["symbols"]),
        providers=set(row["providers"]),
        min_ts=row["min_ts"],
        max_ts=row["max_ts"],
        batches=row["batches"],
    )
    return Checkpoint(
        key,
        row["fingerprint"],
        row["identity"],
        row["status"],
        state,
        str(row["run_id"]) if row["run_id"] else None,
        row["job_run_id"],
        row.get("fanout_group"),
    )


def begin(
    conn: psycopg.Connection,
    key: str,
    *,
    job: str,
    source: str,
    fingerprint: str,
    identity: dict,
    run_id: str,
    job_run_id: int | None,
) -> None:
    """Start a load from the beginning (replacing any older checkpoint of the source)."""
    conn.execute(
        """INSERT INTO store_backfill_checkpoints
               (source_key, job, source, fingerprint, identity, status, run_id, job_run_id)
           VALUES (%(key)s, %(job)s, %(source)s, %(fp)s, %(identity)s, 'loading', %(run)s, %(jr)s)
           ON CONFLICT (source_key) DO UPDATE SET
               job = EXCLUDED.job, source = EXCLUDED.source, fingerprint = EXCLUDED.fingerprint,
               identity = EXCLUDED.identity, status = 'loading', line = 0, byte_offset = 0, header = NULL,
               rows_read = 0, rows_written = 0, rows_rejected = 0, bad_samples = '[]', symbols = '{}',
               providers = '{}', min_ts = NULL, max_ts = NULL, batches = 0, run_id = EXCLUDED.run_id,
               job_run_id = EXCLUDED.job_run_id, started_at = now(), updated_at = now()""",
        {
            "key": key,
            "job": job,
            "source": source,
            "fp": fingerprint,
            "identity": Jsonb(identity),
            "run": run_id,
            "jr": job_run_id,
        },
    )


def adopt(conn: psycopg.Connection, key: str, run_id: str, job_run_id: int | None) -> None:
    """A resuming run takes over the checkpoint."""
    conn.execute(
        "UPDATE store_backfill_checkpoints SET run_id = %s, job_run_id = %s, updated_at = now() WHERE source_key = %s",
        (run_id, job_run_id, key),
    )


def advance(conn: psycopg.Connection, key: str, state: State) -> None:
    """Record progress; call inside the transaction that wrote the batch."""
    conn.execute(
        """UPDATE store_backfill_checkpoints SET
               line = %(line)s, byte_offset = %(offset)s, header = %(header)s, rows_read = %(read)s,
               rows_written = %(written)s, rows_rejected = %(rejected)s, bad_samples = %(samples)s,
               symbols = %(symbols)s, providers = %(providers)s, min_ts = %(min)s, max_ts = %(max)s,
               batches = %(batches)s, updated_at = now()
           WHERE source_key = %(key)s""",
        {
            "key": key,
            "line": state.line,
            "offset": state.byte_offset,
            "header": state.header,
            "read": state.rows_read,
            "written": state.rows_written,
            "rejected": state.rows_rejected,
            "samples": Jsonb(state.bad_samples),
            "symbols": sorted(state.symbols),
            "providers": sorted(state.providers),
            "min": state.min_ts,
            "max": state.max_ts,
            "batches": state.batches,
        },
    )


def finish(conn: psycopg.Connection, key: str, group: str | None = None) -> None:
    """The source was read to its end: the next run starts from the beginning again
    (unless it is a child of the same fan-out `group`, which skips it)."""
    conn.execute(
        """UPDATE store_backfill_checkpoints SET status = 'done', fanout_group = %s, updated_at = now()
           WHERE source_key = %s""",
        (group, key),
    )

"""Schedules as data (`store_schedules`): what runs by itself, how often, paused or not.

The environment (`RETENTION_SCHEDULE`, `REFRESH_SCHEDULE`, `DRIFT_CHECK_SCHEDULE`,
`HOUSEKEEPING_SCHEDULE`) gives
only the initial values: the first process that finds a schedule uninitialised (`every`
NULL) writes them. After that the table is the truth: `PUT /schedules/<name>` changes it,
and every worker's scheduler reads it on each tick, so a change applies without restart.
A schedule whose variable is `off` starts paused (with the built-in period, for when it
is resumed); so does the drift check while drift checks are disabled (`REGISTRY_URL=off`).
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields
from datetime import timedelta
from typing import Any

import psycopg
from psycopg.rows import dict_row
from psycopg.types.json import Jsonb

from app.config import Settings
from app.intervals import IntervalError, format_interval, parse_interval
from app.times import iso
from app.timeseries import catalog

MIN_EVERY = timedelta(seconds=10)


@dataclass(frozen=True)
class Definition:
    name: str
    job: str
    every: timedelta  # the initial period
    paused: bool  # the initial state
    body: dict = field(default_factory=dict)  # the job's trigger body


def definitions(settings: Settings) -> list[Definition]:
    """The store's schedules with their initial values from the settings."""
    defaults: dict[str, Any] = {f.name: f.default for f in fields(Settings)}
    out = []
    for name, job, attr in (
        ("retention", "retention", "retention_every"),
        ("refresh_aggregate", "refresh_aggregate", "refresh_every"),
        ("drift_check", "drift_check", "drift_every"),
        ("housekeeping", "housekeeping", "housekeeping_every"),
    ):
        every = getattr(settings, attr)
        paused = every is None or (job == "drift_check" and not settings.drift_enabled)
        out.append(Definition(name, job, every or defaults[attr], paused))
    # An aggregate whose catalog entry asks to be refreshed more often than
    # REFRESH_SCHEDULE (the 1-minute tick rollups: every minute, so they stay within two
    # minutes of the ticks) gets a schedule of its own, unless refreshes are off.
    refresh = settings.refresh_every
    for agg in catalog.ROLLUPS.values():
        if refresh is not None and agg.refresh_every is not None and agg.refresh_every < refresh:
            out.append(
                Definition(
                    f"refresh_aggregate.{agg.name}", "refresh_aggregate", agg.refresh_every, False, {"name": agg.name}
                )
            )
    return out


def parse_every(value: object) -> timedelta:
    """A schedule period from the API: an interval of at least 10 seconds."""
    try:
        every = parse_interval(value)
    except IntervalError as exc:
        raise ValueError(f"every: {exc}") from None
    if every < MIN_EVERY:
        raise ValueError(f"every must be at least 10 seconds, got {value!r}")
    return every


def ensure(conn: psycopg.Connection, settings: Settings) -> None:
    """Create missing schedules and initialise uninitialised ones from the settings."""
    from app.jobs import KINDS

    with conn.cursor() as cur:
        cur.executemany(
            """INSERT INTO store_schedules (name, job, params, every, paused, updated_at)
               VALUES (%s, %s, %s, %s, %s, now())
               ON CONFLICT (name) DO UPDATE SET job = EXCLUDED.job, params = EXCLUDED.params,
                   every = EXCLUDED.every, paused = EXCLUDED.paused, updated_at = now()
               WHERE store_schedules.every IS NULL""",
            [
                (d.name, d.job, Jsonb(KINDS[d.job].parse(d.body, settings)), d.every, d.paused)
                for d in definitions(settings)
            ],
        )


_SELECT = """SELECT s.name, s.job, s.params, s.every, s.paused, s.last_run_id::text AS last_run_id,
                    s.last_enqueued_at, j.status AS last_status, j.started_at AS last_started_at,
                    CASE WHEN s.paused THEN NULL
                         ELSE greatest(COALESCE(s.last_enqueued_at + s.every, now()), now()) END AS next_run_at
             FROM store_schedules s LEFT JOIN store_jobs j ON j.run_id = s.last_run_id
             WHERE s.every IS NOT NULL"""


def _document(row: dict) -> dict:
    return {
        "name": row["name"],
        "job": row["job"],
        "params": row["params"],
        "every": format_interval(row["every"]),
        "paused": row["paused"],
        "last_run_id": row["last_run_id"],
        "last_status": row["last_status"],
        "last_started_at": iso(row["last_started_at"]),
        "next_run_at": iso(row["next_run_at"]),
    }


def list_all(conn: psycopg.Connection) -> list[dict]:
    with conn.cursor(row_factory=dict_row) as cur:
        return [_document(r) for r in cur.execute(_SELECT + " ORDER BY s.name").fetchall()]


def get(conn: psycopg.Connection, name: str) -> dict | None:
    with conn.cursor(row_factory=dict_row) as cur:
        row = cur.execute(_SELECT + " AND s.name = %s", (name,)).fetchone()
    return _document(row) if row else None


def update(conn: psycopg.Connection, name: str, every: timedelta | None, paused: bool | None) -> dict | None:
    """Change a schedule's period and/or paused state; None if there is no such schedule."""
    row = conn.execute(
        """UPDATE store_schedules SET every = COALESCE(%s, every), paused = COALESCE(%s, paused), updated_at = now()
           WHERE name = %s AND every IS NOT NULL RETURNING 1""",
        (every, paused, name),
    ).fetchone()
    return get(conn, name) if row else None


def claim_due(conn: psycopg.Connection) -> list[dict]:
    """Schedules due now (not paused, period elapsed), marked as enqueued in the same statement."""
    with conn.cursor(row_factory=dict_row) as cur:
        return cur.execute(
            """UPDATE store_schedules SET last_enqueued_at = now()
               WHERE every IS NOT NULL AND NOT paused
                 AND (last_enqueued_at IS NULL OR last_enqueued_at <= now() - every)
               RETURNING name, job, params"""
        ).fetchall()


def record_run(conn: psycopg.Connection, name: str, run_id: str, *, reset_clock: bool) -> None:
    """The schedule's last run; `reset_clock` (a run triggered by hand) restarts its period."""
    conn.execute(
        """UPDATE store_schedules SET last_run_id = %s,
               last_enqueued_at = CASE WHEN %s THEN now() ELSE last_enqueued_at END
           WHERE name = %s""",
        (run_id, reset_clock, name),
    )

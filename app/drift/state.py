"""Drift results in Postgres (migrations/0010_schema_drift.sql): the one place for their SQL."""

from __future__ import annotations

from datetime import datetime

import psycopg
from psycopg.rows import dict_row
from psycopg.types.json import Jsonb

from app.db import scalar
from app.drift.check import Check

HISTORY_DAYS = 30
HEALTH_TIMEOUT_MS = 1000
STATUSES = ("synced", "drift", "missing_in_registry", "unknown")

_UPSERT = """
INSERT INTO store_schema_drift (track, schema, check_id, status, drift_type, local_sha256, registry_sha256,
                                local_version, registry_version, error, checked_at, last_drift_at, last_drift_type)
VALUES (%(track)s, %(schema)s, %(check_id)s, %(status)s, %(drift_type)s, %(local_sha256)s, %(registry_sha256)s,
        %(local_version)s, %(registry_version)s, %(error)s, %(checked_at)s, %(last_drift_at)s, %(drift_type_seen)s)
ON CONFLICT (track, schema) DO UPDATE SET
    check_id = EXCLUDED.check_id, status = EXCLUDED.status, drift_type = EXCLUDED.drift_type,
    local_sha256 = EXCLUDED.local_sha256, registry_sha256 = EXCLUDED.registry_sha256,
    local_version = EXCLUDED.local_version, registry_version = EXCLUDED.registry_version,
    error = EXCLUDED.error, checked_at = EXCLUDED.checked_at,
    last_drift_at = COALESCE(EXCLUDED.last_drift_at, store_schema_drift.last_drift_at),
    last_drift_type = COALESCE(EXCLUDED.last_drift_type, store_schema_drift.last_drift_type)
"""


def record(conn: psycopg.Connection, check: Check, run_id: str | None) -> int:
    """Persist one check (history row + latest state per schema); prune old history."""
    with conn.transaction():
        check_id = scalar(
            conn,
            """INSERT INTO store_drift_checks (run_id, track, checked_at, registry_reachable, error, results)
               VALUES (%s, %s, %s, %s, %s, %s) RETURNING id""",
            (
                run_id,
                check.track,
                check.checked_at,
                check.registry_reachable,
                check.error,
                Jsonb([r.as_dict() for r in check.results]),
            ),
        )
        rows = []
        for r in check.results:
            drifted = r.drifted
            rows.append(
                {
                    **r.as_dict(),
                    "track": check.track,
                    "check_id": check_id,
                    "checked_at": check.checked_at,
                    "last_drift_at": check.checked_at if drifted else None,
                    "drift_type_seen": r.drift_type if drifted else None,
                }
            )
        if rows:
            with conn.cursor() as cur:
                cur.executemany(_UPSERT, rows)
        conn.execute(
            "DELETE FROM store_drift_checks WHERE checked_at < now() - make_interval(days => %s)", (HISTORY_DAYS,)
        )
    return check_id


def _exists(conn: psycopg.Connection) -> bool:
    return scalar(conn, "SELECT to_regclass('store_drift_checks') IS NOT NULL")


def latest(conn: psycopg.Connection, track: str) -> tuple[dict | None, list[dict]]:
    """The last check of `track` and its per-schema rows ((None, []) before any check)."""
    if not _exists(conn):
        return None, []
    with conn.cursor(row_factory=dict_row) as cur:
        head = cur.execute(
            """SELECT id, run_id::text, checked_at, registry_reachable, error FROM store_drift_checks
               WHERE track = %s ORDER BY checked_at DESC, id DESC LIMIT 1""",
            (track,),
        ).fetchone()
        if head is None:
            return None, []
        rows = cur.execute(
            """SELECT schema, status, drift_type, local_sha256, registry_sha256, local_version,
                      registry_version, error, last_drift_at
               FROM store_schema_drift WHERE track = %s AND check_id = %s ORDER BY schema""",
            (track, head["id"]),
        ).fetchall()
    return head, rows


def last_drift(conn: psycopg.Connection, track: str) -> dict[str, datetime]:
    """schema -> when drift was last seen on `track` (any check)."""
    if not _exists(conn):
        return {}
    rows = conn.execute(
        "SELECT schema, last_drift_at FROM store_schema_drift WHERE track = %s AND last_drift_at IS NOT NULL",
        (track,),
    ).fetchall()
    return dict(rows)


def health_component(conn: psycopg.Connection) -> dict | None:
    """The `registry` health component from the last persisted check (None before any check).

    Never calls the registry. Bounded by its own statement timeout; its queries run in a
    transaction of their own, so a failure leaves the (autocommit) connection usable.
    """
    try:
        with conn.transaction():  # rolled back on error: the connection stays usable
            conn.execute(f"SET LOCAL statement_timeout = {HEALTH_TIMEOUT_MS}")
            if not _exists(conn):
                return None
            row = conn.execute(
                """SELECT track, checked_at, registry_reachable, error, results,
                          EXTRACT(EPOCH FROM now() - checked_at)
                   FROM store_drift_checks ORDER BY checked_at DESC, id DESC LIMIT 1"""
            ).fetchone()
    except psycopg.Error as exc:
        return {
            "name": "registry",
            "state": "degraded",
            "details": {"error": f"last drift check unreadable ({type(exc).__name__})"},
        }
    if row is None:
        return None
    track, checked_at, reachable, error, results, age = row
    counts = {status: 0 for status in STATUSES}
    for item in results:
        counts[item.get("status", "unknown")] = counts.get(item.get("status", "unknown"), 0) + 1
    details = {
        "track": track,
        "reachable": "true" if reachable else "false",
        "last_check": checked_at.isoformat(),
        "last_check_age_s": f"{max(float(age), 0.0):.0f}",
        **{status: str(n) for status, n in counts.items()},
    }
    if error:  # the text may name the registry's URL: public probes only say where to look
        details["error"] = "the last drift check failed; GET /drift (admin) has the details"
    state = "healthy" if reachable else "degraded"
    return {"name": "registry", "state": state, "details": details}

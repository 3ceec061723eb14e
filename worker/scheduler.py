"""Periodic work inside the worker process: the reaper sweep and scheduled jobs.

Every worker runs this thread, but only the one holding a Postgres advisory lock
(session-level, so it is released when its process dies) enqueues scheduled jobs.
Scheduled jobs go through the same `service.submit` as API triggers, so single flight
holds and they appear in the ledger with `trigger = 'schedule'`.
"""

from __future__ import annotations

import threading
from datetime import timedelta

import psycopg

from app import db, logs
from app.config import Settings
from app.jobs import reaper, service
from app.timeseries import catalog

LEADER_LOCK_KEY = 0x4D44_5353_5343  # 'MDSSSC'
TICK_S = 5.0


def schedules(settings: Settings) -> list[tuple[str, str, timedelta | None, dict]]:
    """(schedule name, job kind, period, trigger body) for each periodic job.

    Besides the refresh of every aggregate each REFRESH_SCHEDULE, an aggregate whose
    catalog entry asks to be refreshed more often (the 1-minute tick rollups: every
    minute, so they stay within two minutes of the ticks) gets a schedule of its own,
    unless REFRESH_SCHEDULE is off or already that frequent.
    """
    out: list[tuple[str, str, timedelta | None, dict]] = [
        ("retention", "retention", settings.retention_every, {}),
        ("refresh_aggregate", "refresh_aggregate", settings.refresh_every, {}),
        ("drift_check", "drift_check", settings.drift_every, {}),
    ]
    every = settings.refresh_every
    for agg in catalog.ROLLUPS.values():
        if every is not None and agg.refresh_every is not None and agg.refresh_every < every:
            out.append((f"refresh_aggregate:{agg.name}", "refresh_aggregate", agg.refresh_every, {"name": agg.name}))
    return out


class Scheduler(threading.Thread):
    def __init__(self, settings: Settings):
        super().__init__(name="scheduler", daemon=True)
        self.settings = settings
        self.stopped = threading.Event()
        self.conn: psycopg.Connection | None = None
        self.leader = False
        self.log = logs.get("scheduler")

    def stop(self) -> None:
        self.stopped.set()

    def run(self) -> None:
        while not self.stopped.wait(TICK_S):
            try:
                self.tick()
            except psycopg.Error as exc:
                self.log.warning("scheduler tick failed", error=str(exc).splitlines()[0] if str(exc) else "")
                self._reset()
            except Exception:  # noqa: BLE001 - the scheduler must outlive any single failure
                self.log.exception("scheduler tick crashed")
                self._reset()
        self._reset()

    def _reset(self) -> None:
        if self.conn is not None:
            self.conn.close()
        self.conn, self.leader = None, False

    def tick(self) -> None:
        if self.conn is None or self.conn.closed:
            self.conn = db.connect(self.settings, application_name="store-scheduler", autocommit=True)
            self.leader = False
        reaper.sweep(self.settings, self.conn)
        if not self.leader:
            self.leader = self.conn.execute("SELECT pg_try_advisory_lock(%s)", (LEADER_LOCK_KEY,)).fetchone()[0]
            if self.leader:
                self.log.info("this worker runs the schedules")
        if self.leader:
            self.enqueue_due()

    def enqueue_due(self) -> None:
        from app import migrator
        from app.jobs import KINDS

        if migrator.status(self.conn)["pending"]:
            return  # scheduled jobs need the store's schema: wait for POST /migrate

        for name, kind_name, every, body in schedules(self.settings):
            kind = KINDS.get(kind_name)
            if every is None or kind is None:
                continue
            with self.conn.transaction():
                self.conn.execute("INSERT INTO store_schedules (name) VALUES (%s) ON CONFLICT DO NOTHING", (name,))
                due = self.conn.execute(
                    """SELECT last_enqueued_at IS NULL OR last_enqueued_at <= now() - %s
                       FROM store_schedules WHERE name = %s""",
                    (every, name),
                ).fetchone()[0]
            if not due:
                continue
            submitted = service.submit(self.settings, self.conn, kind, kind.parse(body), trigger="schedule")
            self.conn.execute(
                "UPDATE store_schedules SET last_enqueued_at = now(), last_run_id = %s WHERE name = %s",
                (submitted.run_id, name),
            )
            self.log.info("scheduled job submitted", schedule=name, run_id=submitted.run_id, new=submitted.created)

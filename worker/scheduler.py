"""Periodic work inside the worker process: the reaper sweep and scheduled jobs.

Every worker runs this thread, but only the one holding a Postgres advisory lock
(session-level, so it is released when its process dies) enqueues scheduled jobs. The
schedules themselves are rows of `store_schedules` (app/jobs/schedules.py), read on every
tick: pausing or changing one through the API applies without a restart.
Scheduled jobs go through the same `service.submit` as API triggers, so single flight
holds and they appear in the ledger with `trigger = 'schedule'`.
"""

from __future__ import annotations

import threading
import time

import psycopg
import redis

from app import db, logs, migrator
from app.errors import ApiError, first_line
from app.jobs import reaper, schedules, service
from app.jobs.base import JobKind
from app.resources import Resources

LEADER_LOCK_KEY = 0x4D44_5353_5343  # 'MDSSSC'
TICK_S = 5.0


class Scheduler(threading.Thread):
    def __init__(self, resources: Resources, kinds: dict[str, JobKind]):
        super().__init__(name="scheduler", daemon=True)
        self.resources = resources
        self.settings = resources.settings
        self.kinds = kinds
        self.stopped = threading.Event()
        self.conn: psycopg.Connection | None = None
        self.leader = False
        self.log = logs.get("scheduler")

    def stop(self) -> None:
        self.stopped.set()

    def run(self) -> None:
        self.announce()
        while not self.stopped.wait(TICK_S):
            self.announce()
            try:
                self.tick()
            except psycopg.Error as exc:
                self.log.warning("scheduler tick failed", error=first_line(exc))
                self._reset()
            except Exception:  # the scheduler must outlive any single failure
                self.log.exception("scheduler tick crashed")
                self._reset()
        self._reset()
        self.retire()

    def announce(self) -> None:
        """Tell /metrics (store_workers) this worker is alive; a Redis hiccup is only logged."""
        from app.jobs.runner import WORKER_ID

        try:
            self.resources.queue.announce_worker(WORKER_ID, time.time())
        except redis.exceptions.RedisError as exc:
            self.log.debug("could not announce the worker", error=first_line(exc))

    def retire(self) -> None:
        from app.jobs.runner import WORKER_ID

        try:
            self.resources.queue.retire_worker(WORKER_ID)
        except redis.exceptions.RedisError:
            pass

    def _reset(self) -> None:
        if self.conn is not None:
            self.conn.close()
        self.conn, self.leader = None, False

    def tick(self) -> None:
        if self.conn is None or self.conn.closed:
            self.conn = db.connect(self.settings, application_name="store-scheduler", autocommit=True)
            self.leader = False
        conn = self.conn
        reaper.sweep(self.resources, conn)
        if not self.leader:
            row = conn.execute("SELECT pg_try_advisory_lock(%s)", (LEADER_LOCK_KEY,)).fetchone()
            self.leader = bool(row and row[0])
            if self.leader:
                self.log.info("this worker runs the schedules")
        if self.leader:
            self.enqueue_due(conn)

    def enqueue_due(self, conn: psycopg.Connection) -> None:
        """Submit every schedule that is due. The table is read on every tick, so a change
        made through PUT /schedules/<name> applies at the next tick, in whichever worker leads."""
        if migrator.status(conn)["pending"]:
            return  # scheduled jobs need the store's schema: wait for POST /migrate

        schedules.ensure(conn, self.settings)
        for due in schedules.claim_due(conn):
            kind = self.kinds.get(due["job"])
            if kind is None:
                self.log.warning("schedule names an unknown job kind; skipped", schedule=due["name"], job=due["job"])
                continue
            try:
                submitted = service.submit(self.resources, conn, kind, due["params"], trigger="schedule")
            except ApiError as exc:  # the queue is full (JOB_QUEUE_MAX): skipped until its next period
                self.log.warning("scheduled job not submitted", schedule=due["name"], error=exc.message)
                continue
            schedules.record_run(conn, due["name"], submitted.run_id, reset_clock=False)
            self.log.info(
                "scheduled job submitted", schedule=due["name"], run_id=submitted.run_id, new=submitted.created
            )

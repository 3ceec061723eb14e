"""Keeps the ledger honest when processes or Redis die.

- A running job whose heartbeat stopped (worker SIGKILLed, out of memory, machine gone)
  is marked `failed` with an error saying the worker was lost.
- A queued job whose RQ entry vanished (Redis restarted empty, enqueue failed) is
  enqueued again from the ledger.

`sweep` is cheap and idempotent; it runs in every API process and in the worker's
scheduler, so it works even when no worker is alive.
"""

from __future__ import annotations

import threading

import psycopg
import redis

from app import db, logs, queue
from app.config import Settings
from app.jobs import fanout, ledger, service


def sweep(settings: Settings, conn: psycopg.Connection) -> dict:
    log = logs.get("reaper")
    lost = ledger.fail_lost(conn, settings.lost_after)
    for job in lost:
        log.warning("worker lost; job failed", run_id=job["run_id"], job=job["job"], worker=job["worker"])
    fanout.settle_all(conn)  # parents whose last child just ended (or was lost)
    requeued = 0
    try:
        for job in ledger.queued_before(conn, settings.requeue_after):
            if not queue.exists(settings, job["run_id"]):
                if service.enqueue(settings, conn, job["run_id"], job["timeout_s"]):
                    requeued += 1
                    log.warning("queued job was missing from Redis; enqueued again", run_id=job["run_id"])
    except redis.exceptions.RedisError as exc:
        log.info("redis unavailable; re-enqueue deferred", error=str(exc))
    return {"lost": len(lost), "requeued": requeued}


class Sweeper(threading.Thread):
    """Background sweep every few seconds (one per API process)."""

    def __init__(self, settings: Settings, every: float = 5.0):
        super().__init__(name="reaper", daemon=True)
        self.settings, self.every = settings, every
        self.stopped = threading.Event()

    def run(self) -> None:
        while not self.stopped.wait(self.every):
            try:
                with db.connection(self.settings, timeout=2) as conn:
                    ledger.bootstrap(conn, self.settings.database_url)
                    sweep(self.settings, conn)
            except Exception as exc:  # noqa: BLE001 - keep sweeping whatever happens
                logs.get("reaper").debug("sweep skipped", error=str(exc))

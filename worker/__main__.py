"""Entry point: `python -m worker`.

Runs an RQ SimpleWorker (jobs run in this process, so a SIGKILL takes the job down
with it and the reaper reports it) plus the scheduler thread. SIGTERM is a warm
shutdown: the current job finishes, no new job is taken, the process exits 0.
"""

from __future__ import annotations

import signal
import socket
import sys
import time
import uuid

import psycopg
import redis
from rq import SimpleWorker

from app import config, db, logs, metrics, queue
from app.jobs import ledger, runner
from worker.scheduler import Scheduler


def _wait_for_database(settings: config.Settings, log) -> None:
    """The database may start after us (compose): wait, then make sure the ledger exists."""
    delay = 0.5
    while True:
        try:
            with db.connect(settings, application_name="store-worker", autocommit=True) as conn:
                ledger.bootstrap(conn, settings.database_url)
            return
        except psycopg.OperationalError as exc:
            log.warning("database not reachable yet; retrying", error=str(exc).splitlines()[0], retry_in_s=delay)
            time.sleep(delay)
            delay = min(delay * 2, 10)


def _wait_for_redis(settings: config.Settings, log) -> None:
    delay = 0.5
    while True:
        try:
            queue.client(settings, blocking=True).ping()
            return
        except redis.exceptions.RedisError as exc:
            log.warning("redis not reachable yet; retrying", error=str(exc), retry_in_s=delay)
            time.sleep(delay)
            delay = min(delay * 2, 10)


def _exit_while_starting(signum, _frame) -> None:
    """SIGTERM/SIGINT before the work loop started: nothing is running, exit cleanly."""
    raise SystemExit(0)


def main() -> int:
    signal.signal(signal.SIGTERM, _exit_while_starting)
    signal.signal(signal.SIGINT, _exit_while_starting)
    try:
        settings = config.load_settings()
    except config.ConfigError as exc:
        logs.fatal(str(exc))
    logs.configure(settings.log_level, settings.secrets())
    log = logs.get("worker")
    runner.use_settings(settings)
    metrics.bind(settings)
    _wait_for_database(settings, log)
    _wait_for_redis(settings, log)

    scheduler = Scheduler(settings)
    scheduler.start()
    name = f"store-{socket.gethostname()}-{uuid.uuid4().hex[:8]}"
    worker = SimpleWorker(
        [queue.queue(settings)],
        connection=queue.client(settings, blocking=True),
        name=name,
        log_job_description=False,
    )
    log.info("worker started", name=name, queue=settings.queue_name)
    try:
        worker.work(logging_level=settings.log_level, with_scheduler=False)
    finally:
        scheduler.stop()
        scheduler.retire()
        log.info("worker stopped", name=name)
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Entry point: `python -m worker`.

Runs an RQ SimpleWorker (jobs run in this process, so a SIGKILL takes the job down
with it and the reaper reports it) plus the scheduler thread. SIGTERM is a warm
shutdown: the current job finishes, no new job is taken, the process exits 0.
"""

from __future__ import annotations

import signal
import socket
import sys
import uuid
from types import FrameType
from typing import Any

import psycopg
import redis
from rq import SimpleWorker

from app import config, db, logs, retry
from app.errors import first_line
from app.jobs import KINDS, ledger
from app.jobs.runner import Runner, job_class
from app.resources import Resources
from worker.scheduler import Scheduler


def _wait_for_database(settings: config.Settings, log: Any) -> None:
    """The database may start after us (compose): wait, then make sure the ledger exists
    (the process's one ledger bootstrap)."""

    def bootstrap() -> None:
        with db.connect(settings, application_name="store-worker", autocommit=True) as conn:
            ledger.bootstrap(conn)

    def before_pause(_attempt: int, exc: BaseException, pause: float) -> None:
        log.warning("database not reachable yet; retrying", error=first_line(exc), retry_in_s=round(pause, 2))

    retry.call(bootstrap, on=psycopg.OperationalError, first_pause=0.5, max_pause=10, before_pause=before_pause)


def _wait_for_redis(resources: Resources, log: Any) -> None:
    def before_pause(_attempt: int, exc: BaseException, pause: float) -> None:
        log.warning("redis not reachable yet; retrying", error=str(exc), retry_in_s=round(pause, 2))

    retry.call(
        resources.queue.client(blocking=True).ping,
        on=redis.exceptions.RedisError,
        first_pause=0.5,
        max_pause=10,
        before_pause=before_pause,
    )


def _exit_while_starting(signum: int, _frame: FrameType | None) -> None:
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
    resources = Resources(settings)
    _wait_for_database(settings, log)
    _wait_for_redis(resources, log)

    runner = Runner(resources, KINDS)
    resources.background.append(Scheduler(resources, KINDS))
    resources.start()
    name = f"store-{socket.gethostname()}-{uuid.uuid4().hex[:8]}"
    worker = SimpleWorker(
        [resources.queue.rq(blocking=True)],
        connection=resources.queue.client(blocking=True),
        name=name,
        job_class=job_class(runner),
        log_job_description=False,
    )
    log.info("worker started", name=name, queue=settings.queue_name)
    try:
        worker.work(logging_level=settings.log_level, with_scheduler=False)
    finally:
        resources.close()
        runner.close()
        log.info("worker stopped", name=name)
    return 0


if __name__ == "__main__":
    sys.exit(main())

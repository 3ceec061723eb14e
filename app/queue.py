"""Redis and the RQ queue. Redis only transports run ids; Postgres holds the truth."""

from __future__ import annotations

import threading

import redis
from rq import Queue
from rq.job import Job

from app.config import Settings

RUNNER = "app.jobs.runner.execute"
_clients: dict[tuple[str, bool], redis.Redis] = {}
_lock = threading.Lock()


def client(settings: Settings, blocking: bool = False) -> redis.Redis:
    """A process-wide Redis client. `blocking` clients have no read timeout (for BLPOP)."""
    key = (settings.redis_url, blocking)
    if key not in _clients:
        with _lock:
            if key not in _clients:
                _clients[key] = redis.Redis.from_url(
                    settings.redis_url,
                    socket_connect_timeout=1.0,
                    socket_timeout=None if blocking else 1.0,
                    health_check_interval=15,
                    retry_on_timeout=False,
                )
    return _clients[key]


def queue(settings: Settings) -> Queue:
    return Queue(settings.queue_name, connection=client(settings))


def enqueue(settings: Settings, run_id: str, timeout_s: float) -> None:
    """Put a ledger job on the RQ queue; the RQ job id is the run id."""
    queue(settings).enqueue(
        RUNNER,
        run_id,
        job_id=run_id,
        job_timeout=int(timeout_s) + 120,  # backstop; the runner enforces the real limit
        result_ttl=3600,
        failure_ttl=86400,
        description=f"store job {run_id}",
    )


def exists(settings: Settings, run_id: str) -> bool:
    return Job.exists(run_id, connection=client(settings))


def remove(settings: Settings, run_id: str) -> None:
    """Take a queued job off the queue (used when it is cancelled before it ran)."""
    q = queue(settings)
    q.remove(run_id)
    client(settings).delete(Job.key_for(run_id))


def depth(settings: Settings) -> int:
    return int(client(settings).llen(queue(settings).key))


def workers_alive(settings: Settings) -> int:
    """RQ workers registered on this store's queue (a stopped worker deregisters itself)."""
    from rq import Worker

    return len(Worker.all(queue=queue(settings)))

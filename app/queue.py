"""Redis and the RQ queue. Redis only transports run ids; Postgres holds the truth."""

from __future__ import annotations

import threading

import redis
from rq import Queue, Worker
from rq.job import Job

from app.config import Settings

# The function name RQ records for every job. The worker never imports it: its job class
# hands the run id to the process's runner (see app/jobs/runner.py).
RUNNER = "app.jobs.runner.execute"


class JobQueue:
    """This process's Redis clients and the RQ queue of ledger jobs."""

    def __init__(self, settings: Settings):
        self.settings = settings
        self._clients: dict[bool, redis.Redis] = {}
        self._lock = threading.Lock()

    def client(self, blocking: bool = False) -> redis.Redis:
        """The process's Redis client. `blocking` clients have no read timeout (for BLPOP)."""
        if blocking not in self._clients:
            with self._lock:
                if blocking not in self._clients:
                    self._clients[blocking] = redis.Redis.from_url(
                        self.settings.redis_url,
                        socket_connect_timeout=1.0,
                        socket_timeout=None if blocking else 1.0,
                        health_check_interval=15,
                        retry_on_timeout=False,
                    )
        return self._clients[blocking]

    def rq(self, blocking: bool = False) -> Queue:
        return Queue(self.settings.queue_name, connection=self.client(blocking))

    def enqueue(self, run_id: str, timeout_s: float) -> None:
        """Put a ledger job on the RQ queue; the RQ job id is the run id."""
        self.rq().enqueue(
            RUNNER,
            run_id,
            job_id=run_id,
            job_timeout=int(timeout_s) + 120,  # backstop; the runner enforces the real limit
            result_ttl=3600,
            failure_ttl=86400,
            description=f"store job {run_id}",
        )

    def exists(self, run_id: str) -> bool:
        return Job.exists(run_id, connection=self.client())

    def remove(self, run_id: str) -> None:
        """Take a queued job off the queue (used when it is cancelled before it ran)."""
        self.rq().remove(run_id)
        self.client().delete(Job.key_for(run_id))

    def depth(self) -> int:
        return int(self.client().llen(self.rq().key))

    def workers_alive(self) -> int:
        """RQ workers registered on this store's queue (a stopped worker deregisters itself)."""
        return len(Worker.all(queue=self.rq()))

    def close(self) -> None:
        with self._lock:
            for client in self._clients.values():
                client.close()
            self._clients.clear()

    # -- live workers --------------------------------------------------------------------------
    def announce_worker(self, name: str, now: float) -> None:
        """The worker is alive (its scheduler thread calls this every few seconds)."""
        self.client().zadd(WORKERS_KEY, {name: now})

    def retire_worker(self, name: str) -> None:
        self.client().zrem(WORKERS_KEY, name)

    def live_workers(self, now: float) -> int:
        """Workers heard from within WORKER_ALIVE_S (a SIGKILLed one drops out by itself)."""
        c = self.client()
        c.zremrangebyscore(WORKERS_KEY, "-inf", now - 10 * WORKER_ALIVE_S)
        return int(c.zcount(WORKERS_KEY, now - WORKER_ALIVE_S, "+inf"))


WORKERS_KEY = "store:workers"  # sorted set: worker name -> unix time it last said it is alive
WORKER_ALIVE_S = 20.0  # a worker not heard from for this long is not counted

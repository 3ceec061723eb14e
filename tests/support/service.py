"""The service as processes: `gunicorn -c gunicorn.conf.py` and `python -m worker`.

Started exactly as the container starts them, against one database and one Redis, with
schedules off and the registry pointed at a closed port. Supervision: heartbeat every
second and a queued job missing from Redis enqueued again after 2 s, but a running job is
declared lost only after the store's own 30 s, so a busy machine never fails a live job.
Tests of a lost worker ask for `LOSS_ENV` (lost after 6 s) and `restart` the processes
without it before any step that is not about losing a worker. Logs go to files in a
temporary directory.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import tempfile
from pathlib import Path

import redis
import requests

from tests.support.common import ROOT, TOKEN, free_port, wait_for

# For tests of a killed worker: its job is declared lost 6 s after its last heartbeat.
LOSS_ENV = {"JOB_LOST_AFTER_SECONDS": "6"}
NORMAL_LOSS_ENV = {"JOB_LOST_AFTER_SECONDS": "30"}


class Service:
    """gunicorn + worker subprocesses against one database and one Redis."""

    def __init__(self, database_url: str, redis_url: str, env: dict | None = None, workers: int = 1):
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.logdir = Path(tempfile.mkdtemp(prefix="mds-svc-"))
        self.env = {
            **{k: v for k, v in os.environ.items() if k not in ("DATABASE_URL", "REDIS_URL", "PORT")},
            "DATABASE_URL": database_url,
            "REDIS_URL": redis_url,
            "PORT": str(self.port),
            "ADMIN_TOKEN": TOKEN,
            "PROMETHEUS_MULTIPROC_DIR": str(self.logdir / "metrics"),
            "RETENTION_SCHEDULE": "off",
            "REFRESH_SCHEDULE": "off",
            "DRIFT_CHECK_SCHEDULE": "off",
            "HOUSEKEEPING_SCHEDULE": "off",
            "REGISTRY_URL": "http://127.0.0.1:9",
            "BACKFILL_URL_ALLOW": "127.0.0.1",  # the tests' vendor stand-ins listen there
            "JOB_HEARTBEAT_SECONDS": "1",
            "JOB_LOST_AFTER_SECONDS": "30",
            "JOB_REQUEUE_AFTER_SECONDS": "2",
            "WEB_CONCURRENCY": "2",
            "PYTHONUNBUFFERED": "1",
        }
        self.env.update(env or {})
        self.api: subprocess.Popen | None = None
        self.workers: list[subprocess.Popen] = []
        self.n_workers = workers
        self.session = requests.Session()
        self.session.headers["Authorization"] = f"Bearer {TOKEN}"

    # processes
    def _spawn(self, args: list[str], log_name: str) -> subprocess.Popen:
        out = open(self.logdir / log_name, "ab")
        return subprocess.Popen(
            args, cwd=ROOT, env=self.env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True
        )

    def start_api(self) -> Service:
        self.api = self._spawn([sys.executable, "-m", "gunicorn", "-c", "gunicorn.conf.py"], "api.log")
        wait_for(
            lambda: requests.get(self.url + "/healthz", timeout=1).status_code == 200,
            20,
            message="the API to answer /healthz",
        )
        return self

    def start_worker(self, wait: bool = True) -> subprocess.Popen:
        log_name = f"worker-{len(self.workers)}.log"
        proc = self._spawn([sys.executable, "-m", "worker"], log_name)
        self.workers.append(proc)
        if wait:  # registered in Redis = listening on the queue
            from rq import Worker

            conn = redis.Redis.from_url(self.env["REDIS_URL"])
            alive = sum(1 for p in self.workers if p.poll() is None)
            wait_for(
                lambda: Worker.count(connection=conn) >= alive or proc.poll() is not None,
                30,
                message="the worker to register in Redis",
            )
            assert proc.poll() is None, self.logs(log_name)
        return proc

    def start(self) -> Service:
        self.start_api()
        for _ in range(self.n_workers):
            self.start_worker()
        return self

    def restart(self, env: dict[str, str | None]) -> Service:
        """Stop every process, change the environment (None removes a variable), start again
        (same port, same number of workers as at first)."""
        self.stop()
        for name, value in env.items():
            if value is None:
                self.env.pop(name, None)
            else:
                self.env[name] = value
        self.api, self.workers = None, []
        return self.start()

    def stop(self) -> None:
        for proc in [self.api, *self.workers]:
            if proc is not None and proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        for proc in [self.api, *self.workers]:
            if proc is None:
                continue
            try:
                proc.wait(30)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(10)

    def logs(self, name: str = "api.log") -> str:
        path = self.logdir / name
        return path.read_text(errors="replace") if path.exists() else ""

    def all_logs(self) -> str:
        return "".join(p.read_text(errors="replace") for p in sorted(self.logdir.glob("*.log")))

    # HTTP helpers
    def get(self, path: str, **kw) -> requests.Response:
        return self.session.get(self.url + path, timeout=kw.pop("timeout", 10), **kw)

    def post(self, path: str, json=None, **kw) -> requests.Response:
        return self.session.post(self.url + path, json=json, timeout=kw.pop("timeout", 10), **kw)

    def put(self, path: str, json=None, **kw) -> requests.Response:
        return self.session.put(self.url + path, json=json, timeout=kw.pop("timeout", 10), **kw)

    def trigger(self, path: str, json=None, **kw) -> str:
        resp = self.post(path, json=json, **kw)
        assert resp.status_code == 202, (resp.status_code, resp.text)
        return resp.json()["run_id"]

    def wait_job(self, run_id: str, timeout: float = 120.0, statuses=("success", "failed", "cancelled")) -> dict:
        def done():
            doc = self.get(f"/jobs/{run_id}").json()
            return doc if doc["status"] in statuses else None

        return wait_for(done, timeout, 0.2, message=f"job {run_id} to reach {statuses}")

    def run_job(self, path: str, json=None, timeout: float = 120.0) -> dict:
        """Trigger, poll to the end, assert success, return the job document."""
        doc = self.wait_job(self.trigger(path, json), timeout)
        assert doc["status"] == "success", doc
        return doc

    def migrate(self) -> dict:
        return self.run_job("/migrate")


def scrape(svc: Service) -> dict[str, float]:
    """The service's /metrics as {sample name with labels: value}."""
    samples = {}
    for line in svc.get("/metrics").text.splitlines():
        if line and not line.startswith("#"):
            name, _, value = line.rpartition(" ")
            samples[name] = float(value)
    return samples


def json_lines(text: str) -> list[dict]:
    """Every non-blank line of a JSON log, parsed (each line is one JSON object)."""
    return [json.loads(line) for line in text.splitlines() if line.strip()]

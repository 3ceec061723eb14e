"""Shared fixtures: real Postgres databases, a throwaway Redis, real gunicorn + worker.

- Postgres: the machine's server (TEST_PG_ADMIN_URL, default
  postgresql://postgres@127.0.0.1:5432/postgres); every test that asks for a database
  gets a fresh one, dropped afterwards.
- Redis: one throwaway `redis-server` per test session on a free port, flushed per test.
- `service_factory` starts `gunicorn -c gunicorn.conf.py` and `python -m worker` as
  subprocesses, exactly as the container does, and stops them at the end of the test.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import psycopg
import pytest
import redis
import requests

ROOT = Path(__file__).resolve().parent.parent
ADMIN_URL = os.environ.get("TEST_PG_ADMIN_URL", "postgresql://postgres@127.0.0.1:5432/postgres")
TOKEN = "test-admin-token-0123456789"
sys.path.insert(0, str(ROOT))


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for(predicate, timeout: float = 20.0, interval: float = 0.1, message: str = "condition"):
    """Poll `predicate` until it returns a truthy value or the deadline passes."""
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        try:
            last = predicate()
        except Exception as exc:  # noqa: BLE001 - keep polling through transient errors
            last = exc
        else:
            if last:
                return last
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout}s waiting for {message}; last: {last!r}")


# -- Postgres --------------------------------------------------------------------------
def database_url_for(name: str) -> str:
    parts = urlsplit(ADMIN_URL)
    return urlunsplit(parts._replace(path=f"/{name}"))


def drop_database(name: str) -> None:
    with psycopg.connect(ADMIN_URL, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def create_database(template: str | None = None) -> tuple[str, str]:
    name = f"mds_test_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(ADMIN_URL, autocommit=True) as conn:
        if template:
            conn.execute(f'CREATE DATABASE "{name}" TEMPLATE "{template}"')
        else:
            conn.execute(f'CREATE DATABASE "{name}"')
    return name, database_url_for(name)


@pytest.fixture
def database_url():
    """URL of a fresh, empty database (dropped after the test)."""
    name, url = create_database()
    yield url
    drop_database(name)


@pytest.fixture(scope="session")
def migrated_template(redis_server):
    """A database with every migration applied, once per session, to clone from."""
    from app import migrator

    name, url = create_database()
    migrator.apply(make_settings(url, redis_server.url))
    yield name
    drop_database(name)


@pytest.fixture
def migrated_database_url(migrated_template):
    """A fresh database with every migration applied (a clone of the session's template)."""
    name, url = create_database(template=migrated_template)
    yield url
    drop_database(name)


@pytest.fixture
def conn(migrated_database_url):
    """An autocommit connection to a fresh, fully migrated database."""
    with psycopg.connect(migrated_database_url, autocommit=True) as c:
        yield c


# -- Redis -----------------------------------------------------------------------------
class RedisServer:
    """A throwaway redis-server (no persistence) on a free port."""

    def __init__(self):
        self.port = free_port()
        self.dir = tempfile.mkdtemp(prefix="mds-redis-")
        self.proc: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> RedisServer:
        self.proc = subprocess.Popen(
            [
                shutil.which("redis-server") or "redis-server",
                "--port",
                str(self.port),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
                "--dir",
                self.dir,
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        wait_for(lambda: redis.Redis(port=self.port).ping(), 10, message="redis-server to answer")
        return self

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(10)
        self.proc = None

    def kill(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)
        self.proc = None


@pytest.fixture(scope="session")
def redis_server():
    server = RedisServer().start()
    yield server
    server.stop()
    shutil.rmtree(server.dir, ignore_errors=True)


@pytest.fixture
def redis_url(redis_server):
    if redis_server.proc is None or redis_server.proc.poll() is not None:
        redis_server.start()
    redis.Redis.from_url(redis_server.url).flushall()
    return redis_server.url


def make_settings(database_url: str, redis_url: str, **overrides):
    from app.config import load_settings

    env = {"DATABASE_URL": database_url, "REDIS_URL": redis_url, "ADMIN_TOKEN": TOKEN}
    env.update({k: str(v) for k, v in overrides.items()})
    return load_settings(env, dotenv=False)


# -- the service as processes ------------------------------------------------------------
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
            "REGISTRY_URL": "http://127.0.0.1:9",
            "JOB_HEARTBEAT_SECONDS": "1",
            "JOB_LOST_AFTER_SECONDS": "6",
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

    def wait_job(self, run_id: str, timeout: float = 60.0, statuses=("success", "failed", "cancelled")) -> dict:
        def done():
            doc = self.get(f"/jobs/{run_id}").json()
            return doc if doc["status"] in statuses else None

        return wait_for(done, timeout, 0.2, message=f"job {run_id} to reach {statuses}")

    def run_job(self, path: str, json=None, timeout: float = 60.0) -> dict:
        """Trigger, poll to the end, assert success, return the job document."""
        doc = self.wait_job(self.trigger(path, json), timeout)
        assert doc["status"] == "success", doc
        return doc

    def migrate(self) -> dict:
        return self.run_job("/migrate")


@pytest.fixture
def service_factory(redis_url):
    started: list[Service] = []

    def factory(database_url: str, env: dict | None = None, workers: int = 1, start: bool = True) -> Service:
        svc = Service(database_url, redis_url, env, workers)
        started.append(svc)
        return svc.start() if start else svc

    yield factory
    for svc in started:
        svc.stop()
        shutil.rmtree(svc.logdir, ignore_errors=True)


@pytest.fixture
def service(database_url, service_factory) -> Service:
    """API + one worker on a fresh, not yet migrated database."""
    return service_factory(database_url)


@pytest.fixture
def migrated_service(migrated_database_url, service_factory) -> Service:
    """API + one worker on a fresh, fully migrated database (no job in its ledger yet)."""
    return service_factory(migrated_database_url)

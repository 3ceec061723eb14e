"""Load benchmark: the store's API against a minimal Flask + pool reference, same gunicorn.

    .venv/bin/python bench/load.py [--duration 5] [--rounds 1] [--concurrency 1,16,64] [--samples 100]

Starts, on 127.0.0.1, a throwaway Redis, a fresh database (TEST_PG_ADMIN_URL, default
postgresql://postgres@127.0.0.1:5432/postgres), the store (`gunicorn -c gunicorn.conf.py`
plus one `python -m worker`) and the reference: `reference_app()` below, served by the
very same `gunicorn -c gunicorn.conf.py` (same workers, threads, worker class, keep-alive,
logging), answering `SELECT 1` through a psycopg_pool pool.

Then, with wrk (Debian package `wrk`; a bounded, closed-loop generator: each connection
sends its next request when the previous answer arrived), at each concurrency: requests/s
and p50/p99 latency for the reference, /health, /readyz, /metrics, GET /jobs/<id>, and
POST /migrate {"dry_run": true} with an Idempotency-Key (a new key per request, and one
key replayed); ratios ours/reference. The aim: /health at >= 80 % of the reference's
requests/s and a p99 within 1.5x, at concurrency 16.

Last, enqueue-to-start latency of a trivial job, sequentially, `--samples` times: the
store (POST trigger sent -> ledger `started_at` of a dry-run migrate) against raw RQ
(`enqueue()` called -> RQ's `started_at` of a no-op function, SimpleWorker, same Redis).
Nothing is asserted: it is a measurement.
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


# -- the reference application (imported by gunicorn as `bench.load:reference_app()`) -----
def reference_app():
    """Flask app: GET / runs SELECT 1 on a pooled connection (pool sized like the store's)."""
    from flask import Flask, jsonify
    from psycopg_pool import ConnectionPool

    app = Flask("reference")
    state: dict = {}

    def pool() -> ConnectionPool:
        if "pool" not in state:  # first request, after gunicorn forked
            state["pool"] = ConnectionPool(
                os.environ["DATABASE_URL"], min_size=1, max_size=8, timeout=1.0, kwargs={"autocommit": True}
            )
        return state["pool"]

    @app.get("/")
    def select_one():
        with pool().connection() as conn:
            value = conn.execute("SELECT 1").fetchone()[0]
        return jsonify({"ok": value == 1})

    return app


def noop() -> None:
    """The trivial job of the raw-RQ baseline."""


# -- wrk ----------------------------------------------------------------------------------------
_UNITS = {"us": 0.001, "ms": 1.0, "s": 1000.0, "m": 60000.0}

NEW_KEY_LUA = """
local threads = {}
function setup(thread) thread:set("tid", #threads + 1); table.insert(threads, thread) end
function init(args) prefix = "bench-" .. args[1] .. "-" .. tid .. "-"; counter = 0 end
function request()
  counter = counter + 1
  return wrk.format("POST", "/migrate", {["Authorization"] = "Bearer %(token)s",
    ["Content-Type"] = "application/json", ["Idempotency-Key"] = prefix .. counter}, '{"dry_run": true}')
end
"""
SAME_KEY_LUA = """
wrk.method = "POST"
wrk.body = '{"dry_run": true}'
wrk.headers["Content-Type"] = "application/json"
wrk.headers["Authorization"] = "Bearer %(token)s"
wrk.headers["Idempotency-Key"] = "bench-replayed-key"
"""


def _ms(text: str) -> float:
    value, unit = re.fullmatch(r"([\d.]+)(us|ms|s|m)", text).groups()
    return float(value) * _UNITS[unit]


def wrk(url: str, concurrency: int, duration: float, headers: dict | None = None, script: Path | None = None) -> dict:
    cmd = [
        "wrk",
        "-t",
        str(min(concurrency, 2)),
        "-c",
        str(concurrency),
        "-d",
        f"{max(1, round(duration))}s",
        "--latency",
        "--timeout",
        "10s",
    ]
    for key, value in (headers or {}).items():
        cmd += ["-H", f"{key}: {value}"]
    if script:
        cmd += ["-s", str(script)]
    cmd.append(url)
    if script:
        cmd += ["--", uuid.uuid4().hex[:8]]
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=duration + 60, check=True).stdout
    dist = dict(re.findall(r"^\s+(50|99)%\s+([\d.]+(?:us|ms|s|m))\s*$", out, re.M))
    non2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    errors = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", out)
    return {
        "rps": float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1)),
        "p50": _ms(dist["50"]),
        "p99": _ms(dist["99"]),
        "requests": int(re.search(r"(\d+) requests in", out).group(1)),
        "bad": (int(non2xx.group(1)) if non2xx else 0) + (sum(map(int, errors.groups())) if errors else 0),
    }


# -- processes ------------------------------------------------------------------------------------
def start_reference(database_url: str, port: int, workdir: Path) -> subprocess.Popen:
    env = {
        **os.environ,
        "DATABASE_URL": database_url,
        "PORT": str(port),
        "REDIS_URL": "redis://127.0.0.1:9/0",
        "PROMETHEUS_MULTIPROC_DIR": str(workdir / "reference-metrics"),
        "PYTHONPATH": str(ROOT),
    }
    log = open(workdir / "reference.log", "ab")
    return subprocess.Popen(
        [sys.executable, "-m", "gunicorn", "-c", "gunicorn.conf.py", "bench.load:reference_app()"],
        cwd=ROOT,
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )


def start_raw_rq_worker(redis_url: str, queue: str, workdir: Path) -> subprocess.Popen:
    code = (
        "import sys; from redis import Redis; from rq import Queue, SimpleWorker; "
        f"r = Redis.from_url({redis_url!r}); "
        f"SimpleWorker([Queue({queue!r}, connection=r)], connection=r).work(logging_level='WARNING')"
    )
    log = open(workdir / "raw-rq.log", "ab")
    return subprocess.Popen(
        [sys.executable, "-c", code],
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )


def stop(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(10)


# -- enqueue-to-start latency -------------------------------------------------------------------
def _epoch(value) -> float:
    if isinstance(value, str):
        value = datetime.fromisoformat(value)
    if value.tzinfo is None:
        value = value.replace(tzinfo=UTC)
    return value.timestamp()


def store_latencies(svc, samples: int) -> list[float]:
    out = []
    for _ in range(samples):
        sent = time.time()
        run_id = svc.trigger("/migrate", {"dry_run": True})
        doc = svc.wait_job(run_id, timeout=30)
        assert doc["status"] == "success", doc
        out.append((_epoch(doc["started_at"]) - sent) * 1000)
    return out


def rq_latencies(redis_url: str, queue: str, samples: int) -> list[float]:
    from redis import Redis
    from rq import Queue

    q = Queue(queue, connection=Redis.from_url(redis_url))
    out = []
    for _ in range(samples):
        sent = time.time()
        job = q.enqueue("bench.load.noop")
        deadline = time.monotonic() + 30
        while job.get_status(refresh=True) != "finished":
            if time.monotonic() > deadline:
                raise RuntimeError(f"raw RQ job {job.id} did not finish")
            time.sleep(0.002)
        job.refresh()
        out.append((_epoch(job.started_at) - sent) * 1000)
    return out


def pct(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(p / 100 * (len(ordered) - 1))))]


# -- main ---------------------------------------------------------------------------------------------
def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--duration", type=float, default=5.0, help="seconds per measurement (after 1 s warm-up)")
    parser.add_argument("--concurrency", default="1,16,64")
    parser.add_argument("--samples", type=int, default=100, help="enqueue-to-start samples per side")
    parser.add_argument("--rounds", type=int, default=1, help="measure every cell this often; report medians")
    args = parser.parse_args()
    levels = [int(c) for c in args.concurrency.split(",")]
    if not shutil.which("wrk"):
        sys.exit("wrk is not installed (apt-get install -y wrk)")

    sys.path.insert(0, str(ROOT))
    import requests

    from tests.support.common import TOKEN, free_port, wait_for
    from tests.support.db import create_database, drop_database
    from tests.support.redis import RedisServer
    from tests.support.service import Service

    workdir = Path(tempfile.mkdtemp(prefix="mds-bench-"))
    redis_server = RedisServer().start()
    db_name, database_url = create_database()
    svc = reference = raw_worker = None
    try:
        svc = Service(
            database_url,
            redis_server.url,
            env={
                # the store's defaults, not the test suite's faster supervision
                "JOB_HEARTBEAT_SECONDS": "5",
                "JOB_LOST_AFTER_SECONDS": "30",
                "JOB_REQUEUE_AFTER_SECONDS": "10",
            },
        ).start()
        svc.migrate()
        run_id = svc.trigger("/migrate", {"dry_run": True})
        svc.wait_job(run_id)
        ref_port = free_port()
        reference = start_reference(database_url, ref_port, workdir)
        ref_url = f"http://127.0.0.1:{ref_port}/"
        wait_for(lambda: requests.get(ref_url, timeout=1).status_code == 200, 20, message="the reference app")

        auth = {"Authorization": f"Bearer {TOKEN}"}
        new_key, same_key = workdir / "new_key.lua", workdir / "same_key.lua"
        new_key.write_text(NEW_KEY_LUA % {"token": TOKEN})
        same_key.write_text(SAME_KEY_LUA % {"token": TOKEN})
        targets = [
            ("GET /health", svc.url + "/health", {}, None),
            ("GET /readyz", svc.url + "/readyz", {}, None),
            ("GET /metrics", svc.url + "/metrics", {}, None),
            ("GET /jobs/<id>", svc.url + f"/jobs/{run_id}", auth, None),
            ("POST /migrate (new Idempotency-Key)", svc.url + "/migrate", {}, new_key),
            ("POST /migrate (replayed Idempotency-Key)", svc.url + "/migrate", {}, same_key),
        ]

        cells = [(c, "reference: Flask + pool SELECT 1", ref_url, {}, None) for c in levels]
        cells += [(c, *target) for c in levels for target in targets]
        samples: dict[tuple, list[dict]] = {}
        for _ in range(args.rounds):  # rounds interleave, so a noisy moment hits every cell alike
            for c, name, url, headers, script in cells:
                wrk(url, c, 1, headers, script)  # warm-up
                samples.setdefault((name, c), []).append(wrk(url, c, args.duration, headers, script))
        median = {key: {m: statistics.median(s[m] for s in runs) for m in runs[0]} for key, runs in samples.items()}
        rows = []
        for c in levels:
            ref = median[("reference: Flask + pool SELECT 1", c)]
            rows.append(("reference: Flask + pool SELECT 1", c, ref, ref))
            rows += [(name, c, median[(name, c)], ref) for name, *_ in targets]

        print(
            f"\nHTTP load: wrk, {args.duration:g} s per cell after 1 s warm-up, median of {args.rounds} round(s), 127.0.0.1, "
            f"gunicorn -c gunicorn.conf.py (WEB_CONCURRENCY={svc.env['WEB_CONCURRENCY']}, "
            f"GUNICORN_THREADS={os.environ.get('GUNICORN_THREADS', '4')}), {os.cpu_count()} CPUs\n"
        )
        head = f"{'endpoint':42} {'conc':>4} {'req/s':>8} {'p50 ms':>8} {'p99 ms':>8} {'non-2xx':>8} {'req/s vs ref':>12} {'p99 vs ref':>10}"
        print(head)
        print("-" * len(head))
        for name, c, r, ref in rows:
            print(
                f"{name:42} {c:>4} {r['rps']:>8.0f} {r['p50']:>8.2f} {r['p99']:>8.2f} {r['bad']:>8.0f} "
                f"{r['rps'] / ref['rps']:>12.2f} {r['p99'] / ref['p99']:>10.2f}"
            )
        aim = next((r, ref) for name, c, r, ref in rows if name == "GET /health" and c == 16) if 16 in levels else None
        if aim:
            r, ref = aim
            ok = r["rps"] >= 0.8 * ref["rps"] and r["p99"] <= 1.5 * ref["p99"]
            print(
                f"\n/health at concurrency 16: {r['rps'] / ref['rps']:.2f}x the reference's req/s (aim >= 0.80), "
                f"p99 {r['p99'] / ref['p99']:.2f}x (aim <= 1.50): {'meets the aim' if ok else 'MISSES the aim'}"
            )

        stop(reference)
        reference = None
        queue = "bench-raw-rq"
        raw_worker = start_raw_rq_worker(redis_server.url, queue, workdir)
        rq_latencies(redis_server.url, queue, 3)  # warm-up
        store_latencies(svc, 3)
        ours = store_latencies(svc, args.samples)
        raw = rq_latencies(redis_server.url, queue, args.samples)
        print(f"\nEnqueue-to-start of a trivial job, {args.samples} sequential samples each (ms):")
        print(f"{'':44} {'p50':>8} {'p99':>8} {'mean':>8}")
        for name, values in (
            ("store: POST /migrate dry_run -> started_at", ours),
            ("raw RQ: enqueue(noop) -> started_at", raw),
        ):
            print(f"{name:44} {pct(values, 50):>8.2f} {pct(values, 99):>8.2f} {statistics.mean(values):>8.2f}")
        print(f"{'ratio store / raw RQ':44} {pct(ours, 50) / pct(raw, 50):>8.2f} {pct(ours, 99) / pct(raw, 99):>8.2f}")
        return 0
    finally:
        for proc in (reference, raw_worker):
            if proc is not None:
                stop(proc)
        if svc is not None:
            svc.stop()
            shutil.rmtree(svc.logdir, ignore_errors=True)
        drop_database(db_name)
        redis_server.stop()
        shutil.rmtree(redis_server.dir, ignore_errors=True)
        shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())

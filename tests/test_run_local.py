"""`scripts/run-local.sh` (what `make run` runs) as a person uses it: in a terminal, Ctrl-C.

The script runs in a pseudo-terminal (the pty module) as the leader of its own process
group, with its own Postgres cluster and Redis under a temporary state directory. Ctrl-C
is SIGINT to the whole process group, as a terminal sends it. A backfill reads a slow
vendor (a real HTTP server on 127.0.0.1 that trickles the file), so the job is running
when the signal comes.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import tempfile
from pathlib import Path

import pytest
import redis
from rq import Worker

from tests.support.backfill import bars, write_ndjson
from tests.support.common import ROOT, TOKEN, free_port, wait_for
from tests.support.faults import alive
from tests.support.local_run import LocalRun, Trickle, Vendor, leftovers, listening

pytestmark = [pytest.mark.slow, pytest.mark.timeout(400)]
STOP_LIMIT = 10.0  # seconds from Ctrl-C until every process is gone

if shutil.which("redis-server") is None or not list(Path("/usr/lib/postgresql").glob("*/bin/initdb")):
    pytest.skip("needs the Postgres and Redis binaries", allow_module_level=True)


@pytest.fixture
def local(tmp_path):
    state = Path(tempfile.mkdtemp(prefix="mds-local-", dir="/tmp"))
    os.chmod(state, 0o755)  # the postgres user runs the cluster inside it
    ports = {"PORT": free_port(), "LOCAL_PG_PORT": free_port(), "LOCAL_REDIS_PORT": free_port()}
    env = {
        **{k: v for k, v in os.environ.items() if k not in ("DATABASE_URL", "REDIS_URL", "HOST", "REGISTRY_URL")},
        **{k: str(v) for k, v in ports.items()},
        "LOCAL_STATE_DIR": str(state),
        "ADMIN_TOKEN": TOKEN,
        "RETENTION_SCHEDULE": "off",
        "REFRESH_SCHEDULE": "off",
        "JOB_HEARTBEAT_SECONDS": "1",
        "WEB_CONCURRENCY": "1",
        "BACKFILL_URL_ALLOW": "127.0.0.1",  # the test's slow vendor stand-in listens there
        "TERM": "xterm",
    }
    env.pop("PROMETHEUS_MULTIPROC_DIR", None)
    env.pop("LOG_FORMAT", None)
    runs: list[LocalRun] = []

    def start() -> LocalRun:
        run = LocalRun(state, env)
        runs.append(run)
        run.wait_ready()
        return run

    start.state, start.ports, start.env = state, list(ports.values()), env  # type: ignore[attr-defined]
    yield start
    for run in runs:
        if not run.exited():
            run.ctrl_c()
        run.kill()
    if leftovers(state, list(ports.values())):  # never leave servers behind, even on failure
        os.system(f"runuser -u postgres -- pg_ctl -D {state}/pg -m immediate stop >/dev/null 2>&1")
    shutil.rmtree(state, ignore_errors=True)


def test_ctrl_c_mid_backfill_stops_everything_and_a_restart_resumes(local, tmp_path):
    vendor_dir = tmp_path / "vendor"
    vendor_dir.mkdir()
    rows = bars(30_000, ("lr1", "lr2"))
    write_ndjson(vendor_dir / "bars.ndjson", rows)
    vendor = Vendor(vendor_dir)
    try:
        run = local()
        text = run.text()
        # where everything is
        for needle in (
            f"http://127.0.0.1:{run.port}",
            "DATABASE_URL   postgresql://postgres@127.0.0.1:",
            "REDIS_URL",
            "backfill dir",
            str(local.state / "backfill"),
            "token",
            "drift checks   off",
        ):
            assert needle in text, (needle, text[-3000:])
        assert listening(run.port) == ["127.0.0.1"]  # HOST: not on every interface
        assert '{"event"' not in text  # a terminal gets console lines, not JSON
        health = run.get("/health").json()
        registry = next(c for c in health["components"] if c["name"] == "registry")
        assert registry["details"]["check"] == "disabled"

        body = {"source": f"{vendor.url}/bars.ndjson", "batch_rows": 1000}
        resp = run.post("/backfill/bars_ohlcv", body)
        assert resp.status_code == 202, resp.text
        run_id = resp.json()["run_id"]
        wait_for(
            lambda: run.get(f"/jobs/{run_id}").json()["progress"].get("rows_written", 0) > 0,
            60,
            0.2,
            message="the backfill to commit a batch",
        )
        elapsed = run.ctrl_c()
        assert elapsed < STOP_LIMIT, f"stopping took {elapsed:.1f}s\n" + run.text()[-5000:]
        assert os.WIFEXITED(run.status) or os.WIFSIGNALED(run.status)
        assert not leftovers(local.state, local.ports), leftovers(local.state, local.ports)
        assert not (local.state / "pg" / "postmaster.pid").exists()
        assert "Traceback" not in run.text(), run.text()[-5000:]
        assert "rq.worker" not in run.text(), "at INFO, RQ's own lines (no run_id) must stay quiet"

        # restart: the job was recorded cancelled, no ghost worker, the backfill resumes
        Trickle.SLOW_PAUSE = 0.0
        again = local()
        doc = again.get(f"/jobs/{run_id}").json()
        assert doc["status"] == "cancelled" and "interrupted" in doc["error"], doc
        r = redis.Redis(port=local.ports[2])
        # The new worker registers in Redis on its own time (the API can answer first);
        # every process of the first run is gone (checked above), so a registered worker
        # whose process is alive is the new one, and any other would be a ghost.
        live = wait_for(
            lambda: [w.name for w in Worker.all(connection=r) if w.pid and alive(w.pid)],
            60,
            0.2,
            message="the restarted worker to register",
        )
        assert [w.name for w in Worker.all(connection=r)] == live and len(live) == 1, live
        metrics = again.get("/metrics").text
        assert "store_workers 1.0" in metrics
        resumed = again.post("/backfill/bars_ohlcv", body).json()["run_id"]
        final = wait_for(
            lambda: (d := again.get(f"/jobs/{resumed}").json())["status"] in ("success", "failed") and d,
            120,
            0.5,
            message="the resumed backfill",
        )
        assert final["status"] == "success", final
        assert final["result"]["resumed_from"]["line"] > 0
        assert final["result"]["rows_read"] == len(rows)

        # a double Ctrl-C in the middle of another load: still everything stops, no server left
        Trickle.SLOW_PAUSE = 0.1
        write_ndjson(vendor_dir / "more.ndjson", bars(30_000, ("lr3",)))
        other = again.post("/backfill/bars_ohlcv", {"source": f"{vendor.url}/more.ndjson", "batch_rows": 1000})
        other_id = other.json()["run_id"]
        wait_for(
            lambda: again.get(f"/jobs/{other_id}").json()["status"] == "running", 60, 0.2, message="the second load"
        )
        elapsed = again.ctrl_c(times=2)
        assert elapsed < STOP_LIMIT, f"stopping took {elapsed:.1f}s\n" + again.text()[-5000:]
        assert not leftovers(local.state, local.ports), leftovers(local.state, local.ports)
        assert not (local.state / "pg" / "postmaster.pid").exists()
    finally:
        Trickle.SLOW_PAUSE = 0.1
        vendor.close()


def test_a_failed_start_names_the_log_to_read_and_leaves_nothing_running(local):
    """Postgres cannot bind its port (something else listens there): the script says which
    log explains it, exits non-zero, and nothing it started keeps running."""
    with socket.socket() as taken:
        taken.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        taken.bind(("127.0.0.1", local.ports[1]))
        taken.listen()
        proc = subprocess.run(
            ["bash", "scripts/run-local.sh"], cwd=ROOT, env=local.env, capture_output=True, text=True, timeout=180
        )
    assert proc.returncode != 0
    log = local.state / "logs" / "postgres.log"
    assert f"Postgres did not start; read {log}" in proc.stderr, proc.stderr
    assert "could not" in log.read_text()  # the log does explain it
    assert not leftovers(local.state, [local.ports[0], local.ports[2]])

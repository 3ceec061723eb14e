"""`mds` against the real stack (gunicorn + worker, Postgres, Redis): every command's exit
code and output, --wait on success and failure, --json, Ctrl-C, and the error lines.

The CLI runs as a subprocess (`python -m app.cli`, what the `mds` script calls) in a
directory of its own, so no developer's `.env` leaks in. Backfills that must stay running
read from `vendor_standin.GatedSource`, which holds the file half-sent until released.
"""

from __future__ import annotations

import json
import os
import pty
import re
import select
import signal
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from tests.support.backfill import bars, write_ndjson
from tests.support.common import ROOT, TOKEN, free_port, wait_for
from tests.support.vendor_standin import GatedSource, gated_source_service

pytestmark = pytest.mark.timeout(300)
ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")


# -- the stack and the command ------------------------------------------------------------------------
@pytest.fixture(scope="module")
def svc(redis_server, tmp_path_factory):
    yield from gated_source_service(redis_server, tmp_path_factory)


def _env(url: str | None, token: str | None, extra: dict | None = None) -> dict:
    env = {k: v for k, v in os.environ.items() if k not in ("STORE_URL", "ADMIN_TOKEN")}
    env.update({"PYTHONPATH": str(ROOT), "COLUMNS": "200", "PYTHONUNBUFFERED": "1"})
    if url is not None:
        env["STORE_URL"] = url
    if token is not None:
        env["ADMIN_TOKEN"] = token
    env.update(extra or {})
    return env


def mds(svc, *args: str, token: str | None = TOKEN, url: str | None = None, cwd: Path | None = None, timeout=120):
    """Run `python -m app.cli ARGS`; the CompletedProcess (stdout, stderr as text)."""
    return subprocess.run(
        [sys.executable, "-m", "app.cli", *args],
        cwd=cwd or svc.logdir,
        env=_env(url or svc.url, token),
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def ok(proc) -> str:
    assert proc.returncode == 0, (proc.returncode, proc.stdout[-3000:], proc.stderr[-3000:])
    return proc.stdout


def one_error_line(proc, code: int = 1) -> str:
    """The command failed with `code` and said why on exactly one stderr line."""
    assert proc.returncode == code, (proc.returncode, proc.stdout, proc.stderr)
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: "), proc.stderr
    assert "Traceback" not in proc.stderr
    return lines[0]


def _source(svc, name: str, rows) -> str:
    write_ndjson(svc.sources / name, rows)
    return name


def _failed_backfill(svc) -> dict:
    name = _source(svc, "bad.ndjson", bars(3) + [{**bars(1)[0], "ts": "yesterday"}])
    return svc.wait_job(svc.trigger("/backfill/bars_ohlcv", {"source": name}))


# -- status, migrate, --json ----------------------------------------------------------------------------
@pytest.mark.slow
def test_status_shows_health_schema_workers_queue_and_the_last_failures(svc):
    failed = _failed_backfill(svc)
    assert failed["status"] == "failed"
    out = ok(mds(svc, "status"))
    assert re.search(r"store http://127\.0\.0\.1:\d+\s+healthy\s+ready", out), out
    newest = max(p.name.split(".")[0] for p in (ROOT / "migrations").iterdir() if not p.name.endswith(".rollback.sql"))
    assert f"schema   {newest} (0 pending)" in out
    assert re.search(r"workers  1 alive\s+queue  0 waiting", out), out
    for component in ("database", "redis", "prometheus", "schema"):
        assert re.search(rf"^{component}\s+│ healthy", out, re.M), out
    assert "last failed jobs" in out and failed["run_id"] in out and "backfill.bars_ohlcv" in out
    doc = json.loads(ok(mds(svc, "status", "--json")))
    assert doc["readyz"]["state"] == "healthy" and doc["schema"]["pending"] == []
    assert doc["metrics"] == {"store_workers": 1.0, "store_queue_depth": 0.0}
    assert failed["run_id"] in [j["run_id"] for j in doc["failed"]["jobs"]]


@pytest.mark.slow
def test_migrate_wait_ends_with_a_summary_and_exit_0(svc):
    proc = mds(svc, "migrate", "--dry-run", "--wait")
    out = ok(proc)
    run_id = re.search(r"^migrate run ([0-9a-f-]{36})$", out, re.M).group(1)
    assert "✔ success migrate" in out and "dry_run: true" in out and "pending: []" in out
    # no terminal: plain progress lines on stderr, no bar, no escape codes
    assert re.search(r"^\d\d:\d\d:\d\d migrate success", proc.stderr, re.M), proc.stderr
    assert not ANSI.search(proc.stderr + out) and "━" not in proc.stderr
    assert svc.get(f"/jobs/{run_id}").json()["status"] == "success"
    # without --wait: the run id and how to follow it, at once
    out = ok(mds(svc, "migrate", "--dry-run"))
    assert re.search(r"^migrate run [0-9a-f-]{36}", out, re.M) and "follow it: mds jobs watch" in out


@pytest.mark.slow
def test_json_prints_the_apis_documents(svc):
    run_id = svc.run_job("/migrate", {"dry_run": True})["run_id"]
    for args in (["jobs", "show", run_id, "--json"], ["--json", "jobs", "show", run_id]):
        assert json.loads(ok(mds(svc, *args))) == svc.get(f"/jobs/{run_id}").json()
    assert json.loads(ok(mds(svc, "retention", "policies", "--json"))) == svc.get("/retention/policies").json()
    assert json.loads(ok(mds(svc, "aggregates", "--json")))["aggregates"] == svc.get("/aggregates").json()["aggregates"]
    assert json.loads(ok(mds(svc, "drift", "--json")))["schemas"] == svc.get("/drift").json()["schemas"]
    assert json.loads(ok(mds(svc, "backfill", "--json")))["jobs"] == svc.get("/backfill").json()["jobs"]
    listed = json.loads(ok(mds(svc, "jobs", "--json", "--limit", "3")))
    assert [j["run_id"] for j in listed["jobs"]] == [j["run_id"] for j in svc.get("/jobs?limit=3").json()["jobs"]]
    accepted = json.loads(ok(mds(svc, "migrate", "--dry-run", "--json")))
    assert accepted["status"] == "accepted" and accepted["job"] == "migrate"
    final = json.loads(ok(mds(svc, "migrate", "--dry-run", "--wait", "--json")))
    assert final["status"] == "success" and final["result"]["dry_run"] is True


# -- backfill -------------------------------------------------------------------------------------------
@pytest.mark.slow
def test_backfill_wait_success_and_failure_exit_codes(svc):
    good = _source(svc, "good.ndjson", bars(2_500, symbols=("cli",)))
    proc = mds(svc, "backfill", "bars_ohlcv", good, "-p", "batch_rows=1000", "-p", "provider=prov", "--wait")
    out = ok(proc)
    assert "✔ success backfill.bars_ohlcv" in out
    assert "rows_read: 2,500" in out and "rows_written: 2,500" in out
    assert re.search(r"backfill\.bars_ohlcv success\s+100%\s+rows 2,500 of ~2,500", proc.stderr), proc.stderr

    bad = _source(svc, "bad-row.ndjson", bars(5, symbols=("clx",)) + [{**bars(1)[0], "high": 1.0}])
    proc = mds(svc, "backfill", "bars_ohlcv", bad, "--wait")
    assert proc.returncode == 1, (proc.stdout, proc.stderr)
    assert "✘ failed backfill.bars_ohlcv" in proc.stdout
    assert "error: more than max_bad_rows=0 bad rows; first bad line 6" in proc.stdout

    # a parameter of the wrong type, an unknown job, an unknown parameter: one line each
    line = one_error_line(mds(svc, "backfill", "bars_ohlcv", good, "-p", "batch_rows=many"))
    assert line == "error: --param batch_rows must be an integer, got 'many'"
    line = one_error_line(mds(svc, "backfill", "nope", good))
    assert line == "error: no backfill job 'nope'; known: bars_ohlcv, aggregates"
    line = one_error_line(mds(svc, "backfill", "bars_ohlcv", good, "-p", "colour=red"))
    assert "unknown field(s): colour" in line and line.endswith("(HTTP 400)")
    line = one_error_line(mds(svc, "backfill", "bars_ohlcv", "../../etc/passwd"))
    assert "BACKFILL_SOURCE_DIR" in line and line.endswith("(HTTP 400)")


@pytest.mark.slow
def test_backfill_without_a_job_lists_the_catalogue(svc):
    out = ok(mds(svc, "backfill"))
    for name in ("bars_ohlcv", "aggregates", "max_bad_rows", "batch_rows", "slice"):
        assert name in out


@pytest.mark.slow
def test_upload_where_the_store_offers_it(svc, tmp_path):
    path = write_ndjson(tmp_path / "upload.ndjson", bars(10, symbols=("upl",)))
    proc = mds(svc, "backfill", "bars_ohlcv", "--upload", str(path), "--wait")
    if "/backfill/sources/{name}" in svc.get("/openapi.json").json()["paths"]:
        assert proc.returncode == 0, (proc.stdout, proc.stderr)
        assert "uploaded" in proc.stdout and "✔ success" in proc.stdout
    else:
        assert one_error_line(proc) == "error: this store does not offer uploads (PUT /backfill/sources/<name>)"


# -- retention, refresh, drift --------------------------------------------------------------------------
@pytest.mark.slow
def test_retention_set_policies_and_apply(svc):
    out = ok(mds(svc, "retention", "set", "news", "400 days", "--disable"))
    assert out.strip() == "news: keep 400 days (disabled)"
    out = ok(mds(svc, "retention", "policies"))
    assert re.search(r"^news\s+│ 400 days\s+│ disabled", out, re.M), out
    assert ok(mds(svc, "retention", "set", "news", "400 days", "--enable")).strip() == "news: keep 400 days (enabled)"
    line = one_error_line(mds(svc, "retention", "set", "news", "1 s"))
    assert "retain must be at least" in line and line.endswith("(HTTP 400)")
    line = one_error_line(mds(svc, "retention", "set", "no_such_table", "30 days"))
    assert "no_such_table" in line
    out = ok(mds(svc, "retention", "apply", "--table", "news", "--dry-run", "--wait"))
    assert "✔ success retention" in out and "dry_run: true" in out


@pytest.mark.slow
def test_refresh_and_drift(svc):
    out = ok(
        mds(svc, "refresh", "bars_ohlcv_1h", "--start", "2024-01-01T00:00:00Z", "--end", "2024-01-02T00:00:00Z", "-w")
    )
    assert "✔ success refresh_aggregate" in out
    assert re.search(r"^bars_ohlcv_1h\s+│ bars_ohlcv", ok(mds(svc, "aggregates")), re.M)
    # the registry of the test service is unreachable: the check fails (exit 1) and says why
    proc = mds(svc, "drift", "check", "--wait")
    assert proc.returncode == 1, (proc.stdout, proc.stderr)
    assert "✘ failed drift_check" in proc.stdout and "REGISTRY_URL=off" in proc.stdout, proc.stdout
    out = ok(mds(svc, "drift"))
    assert "registry unreachable" in out and "telemetry.HealthStatus" in out


# -- jobs -----------------------------------------------------------------------------------------------
@pytest.mark.slow
def test_jobs_list_show_cancel(svc):
    done = svc.run_job("/migrate", {"dry_run": True})
    failed = _failed_backfill(svc)
    out = ok(mds(svc, "jobs"))
    assert done["run_id"] in out and failed["run_id"] in out
    out = ok(mds(svc, "jobs", "--status", "failed"))
    assert failed["run_id"] in out and done["run_id"] not in out
    out = ok(mds(svc, "jobs", "--job", "migrate", "--limit", "1"))
    assert len(re.findall(r"[0-9a-f]{8}-[0-9a-f-]{27}", out)) == 1

    out = ok(mds(svc, "jobs", "show", failed["run_id"]))
    assert out.startswith("✘ failed backfill.bars_ohlcv")
    assert "first bad line 4" in out and '"source": "bad.ndjson"' in out and "params" in out

    line = one_error_line(mds(svc, "jobs", "cancel", done["run_id"]))
    assert line == "error: job already finished with status 'success' (HTTP 409)"
    line = one_error_line(mds(svc, "jobs", "show", "not-a-run-id"))
    assert "no job with run_id 'not-a-run-id'" in line and line.endswith("(HTTP 404)")
    one_error_line(mds(svc, "jobs", "--status", "sleeping"))  # the API's 400, one line


@pytest.mark.slow
def test_jobs_watch_follows_a_running_job_and_cancel_stops_it(svc):
    body = b"".join(json.dumps(r).encode() + b"\n" for r in bars(4_000, symbols=("wat",)))
    with GatedSource(body, split_at=len(body) // 2) as source:
        run_id = svc.trigger("/backfill/bars_ohlcv", {"source": source.url, "batch_rows": 500})
        wait_for(lambda: (svc.get(f"/jobs/{run_id}").json()["progress"] or {}).get("rows_read"), 60, message="rows")
        watcher = subprocess.Popen(
            [sys.executable, "-m", "app.cli", "jobs", "watch", run_id],
            cwd=svc.logdir,
            env=_env(svc.url, TOKEN),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        # cancel only once the watcher has shown the job running (it may take a while to start)
        lines: list[str] = []
        reader = threading.Thread(target=lambda: lines.extend(watcher.stderr), daemon=True)
        reader.start()
        wait_for(lambda: any("running" in line for line in lines), 60, message="the watcher to show the job running")
        out = ok(mds(svc, "jobs", "cancel", run_id))
        assert out.strip() == f"cancel requested: job {run_id} is stopping (running)"
        source.release_when_stopped(svc.env["DATABASE_URL"], run_id)
        watcher.wait(timeout=120)  # its stdout is one short line: the pipe never fills
        stdout = watcher.stdout.read()
        reader.join(30)
        stderr = "".join(lines)
    assert watcher.returncode == 1, (stdout, stderr)
    assert stdout.startswith("■ cancelled backfill.bars_ohlcv")
    assert re.search(r"backfill\.bars_ohlcv running\s+\d+%\s+rows [\d,]+ of ~[\d,]+\s+[\d.]+/[\d.]+ MB read", stderr), (
        stderr
    )


# `python -m app.cli` with Ctrl-C raising KeyboardInterrupt even when this test run inherited
# SIGINT as ignored (a run started in the background by a non-interactive shell: Python then
# leaves it ignored in the child, and the SIGINT these tests send would do nothing).
CLI_WITH_CTRL_C = [
    sys.executable,
    "-c",
    "import runpy, signal; signal.signal(signal.SIGINT, signal.default_int_handler); "
    "runpy.run_module('app.cli', run_name='__main__', alter_sys=True)",
]


def _start_watched_backfill(svc, source, *extra) -> tuple[subprocess.Popen, str]:
    proc = subprocess.Popen(
        [
            *CLI_WITH_CTRL_C,
            "backfill",
            "bars_ohlcv",
            source.url,
            "-p",
            "batch_rows=500",
            "--wait",
            *extra,
        ],
        cwd=svc.logdir,
        env=_env(svc.url, TOKEN),
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )

    def running() -> str | None:
        jobs = svc.get("/jobs?job=backfill.bars_ohlcv&status=running").json()["jobs"]
        mine = [j for j in jobs if j["params"]["source"] == source.url and (j["progress"] or {}).get("rows_read")]
        return mine[0]["run_id"] if mine else None

    return proc, wait_for(running, 60, message="the watched backfill to run")


@pytest.mark.slow
def test_ctrl_c_with_cancel_on_interrupt_cancels_the_job_and_exits_130(svc):
    body = b"".join(json.dumps(r).encode() + b"\n" for r in bars(4_000, symbols=("int",)))
    with GatedSource(body, split_at=len(body) // 3) as source:
        proc, run_id = _start_watched_backfill(svc, source, "--cancel-on-interrupt")
        proc.send_signal(signal.SIGINT)
        stdout, stderr = proc.communicate(timeout=60)
        assert proc.returncode == 130, (stdout, stderr)
        assert f"cancel requested: job {run_id} is running" in stderr
        assert "Traceback" not in stderr
        assert svc.get(f"/jobs/{run_id}").json()["cancel_requested"] is True
        source.release_when_stopped(svc.env["DATABASE_URL"], run_id)
        assert svc.wait_job(run_id)["status"] == "cancelled"


@pytest.mark.slow
def test_ctrl_c_without_a_terminal_leaves_the_job_running_and_exits_130(svc):
    body = b"".join(json.dumps(r).encode() + b"\n" for r in bars(4_000, symbols=("lve",)))
    with GatedSource(body, split_at=len(body) // 3) as source:
        proc, run_id = _start_watched_backfill(svc, source)
        proc.send_signal(signal.SIGINT)
        stdout, stderr = proc.communicate(timeout=60)
        assert proc.returncode == 130, (stdout, stderr)
        assert f"stopped watching; the job goes on: mds jobs watch {run_id}" in stderr
        assert svc.get(f"/jobs/{run_id}").json()["status"] == "running"
        source.release()
        assert svc.wait_job(run_id)["status"] == "success"


@pytest.mark.slow
def test_on_a_terminal_the_bar_moves_and_finishes(svc):
    """Under a pseudo-terminal rich draws the bar: part of the file first, all of it at the end."""
    body = b"".join(json.dumps(r).encode() + b"\n" for r in bars(4_000, symbols=("tty",)))
    with GatedSource(body, split_at=len(body) // 2) as source:
        master, slave = pty.openpty()
        env = _env(svc.url, TOKEN, {"TERM": "xterm-256color", "COLUMNS": "160", "LINES": "40"})
        proc = subprocess.Popen(
            [sys.executable, "-m", "app.cli", "backfill", "bars_ohlcv", source.url, "-p", "batch_rows=500", "--wait"],
            cwd=svc.logdir,
            env=env,
            stdin=slave,
            stdout=slave,
            stderr=slave,
        )
        os.close(slave)
        seen = bytearray()

        def read_some() -> str:
            while select.select([master], [], [], 0.1)[0]:
                try:
                    chunk = os.read(master, 65536)
                except OSError:
                    break
                if not chunk:
                    break
                seen.extend(chunk)
            return ANSI.sub("", seen.decode("utf-8", "replace"))

        def partial() -> bool:
            return bool(re.search(r"backfill\.bars_ohlcv running.*?\b([1-9]\d?)%.*rows", read_some()))

        wait_for(partial, 60, message="a part-way bar")
        source.release()
        wait_for(lambda: proc.poll() is not None and "✔ success" in read_some(), 60, message="the end")
        os.close(master)
    screen = ANSI.sub("", seen.decode("utf-8", "replace"))
    assert proc.returncode == 0, screen[-2000:]
    assert "━" in screen and "100%" in screen and "4,000 rows" in screen and "ETA" in screen
    assert "rows_read: 4,000" in screen


# -- errors ---------------------------------------------------------------------------------------------
def test_a_refused_connection_is_one_line_naming_the_url(tmp_path):
    url = f"http://127.0.0.1:{free_port()}"
    proc = subprocess.run(
        [sys.executable, "-m", "app.cli", "status"],
        cwd=tmp_path,
        env=_env(url, TOKEN),
        capture_output=True,
        text=True,
        timeout=60,
    )
    line = one_error_line(proc)
    assert line == f"error: cannot reach the store at {url}: connection refused (is it running? set STORE_URL or --url)"


@pytest.mark.slow
def test_wrong_or_missing_token_is_one_line_and_the_token_is_never_printed(svc):
    line = one_error_line(mds(svc, "jobs", token="wrong-token-123456"))
    assert line == "error: the store refused the token (wrong ADMIN_TOKEN or --token)"
    line = one_error_line(mds(svc, "--token", "", "jobs"))
    assert line == "error: the store wants a token: set ADMIN_TOKEN or pass --token"
    proc = mds(svc, "--token", "secret-xyz-987654", "migrate", "--wait")
    assert "secret-xyz-987654" not in proc.stdout + proc.stderr


@pytest.mark.slow
def test_url_and_token_come_from_a_dotenv_file(svc, tmp_path):
    (tmp_path / ".env").write_text(f"STORE_URL={svc.url}\nADMIN_TOKEN={TOKEN}\n")
    proc = subprocess.run(
        [sys.executable, "-m", "app.cli", "jobs", "--limit", "1"],
        cwd=tmp_path,
        env=_env(None, None),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 0, proc.stderr
    # the environment wins over .env, --url over both
    line = one_error_line(mds(svc, "jobs", url="http://127.0.0.1:9", cwd=tmp_path))
    assert line.startswith("error: cannot reach the store at http://127.0.0.1:9: ")
    proc = mds(svc, "--url", svc.url, "jobs", "--limit", "1", url="http://127.0.0.1:9", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr


@pytest.mark.slow
def test_schedules_retry_and_job_filters(svc):
    out = ok(mds(svc, "schedules"))
    for name in ("retention", "refresh_aggregate", "drift_check"):
        assert re.search(rf"^{name}\s+│", out, re.M), out
    out = ok(mds(svc, "schedules", "set", "retention", "--every", "6 hours", "--pause"))
    assert out.strip() == "retention: every 6 hours (paused)"
    assert mds(svc, "schedules", "set", "retention").returncode == 2  # nothing to change: usage
    line = one_error_line(mds(svc, "schedules", "set", "nope", "--resume"))
    assert "nope" in line and line.endswith("(HTTP 404)")
    out = ok(mds(svc, "schedules", "run", "retention", "--wait"))
    assert "✔ success retention" in out

    failed = _failed_backfill(svc)
    proc = mds(svc, "jobs", "retry", failed["run_id"], "--wait")
    assert proc.returncode == 1, (proc.stdout, proc.stderr)  # the same bad file fails again
    new_id = re.search(r"^backfill\.bars_ohlcv run ([0-9a-f-]{36})$", proc.stdout, re.M).group(1)
    assert new_id != failed["run_id"] and "✘ failed backfill.bars_ohlcv" in proc.stdout
    assert svc.get(f"/jobs/{new_id}").json()["retry_of"] == failed["run_id"]

    out = ok(mds(svc, "jobs", "--status", "failed,cancelled", "--job", "backfill.", "--since", "2000-01-01T00:00:00Z"))
    assert failed["run_id"] in out and new_id in out and re.search(r"^\d+ of \d+ jobs$", out, re.M), out
    line = one_error_line(mds(svc, "jobs", "--since", "last tuesday"))
    assert "since" in line and line.endswith("(HTTP 400)")
    # an unknown run id: the API's 404 text, one line
    line = one_error_line(mds(svc, "jobs", "retry", "not-a-run-id"))
    assert line.endswith("(HTTP 404)")


@pytest.mark.slow  # several seconds: a property test or many processes
def test_usage_errors_exit_2_and_help_lists_every_command(tmp_path):
    env = _env("http://127.0.0.1:9", TOKEN)
    run = lambda *a: subprocess.run(  # noqa: E731
        [sys.executable, "-m", "app.cli", *a], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=60
    )
    helped = run("--help")
    assert helped.returncode == 0
    for name in ("status", "migrate", "retention", "refresh", "backfill", "drift", "jobs", "schedules", "aggregates"):
        assert re.search(rf"^  {name}\b", helped.stdout, re.M), helped.stdout
    assert run("jobs", "--limit", "0").returncode == 2
    assert run("no-such-command").returncode == 2
    assert run("--version").stdout.startswith("mds (market-data-store) ")


def test_the_mds_console_script_is_declared_and_installed():
    import tomllib

    scripts = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["scripts"]
    module, _, attr = scripts["mds"].partition(":")
    assert callable(getattr(__import__(module, fromlist=[attr]), attr))
    script = Path(sys.executable).parent / "mds"
    if not script.exists():
        if os.environ.get("CI"):
            pytest.fail(f"{script} is missing: `make venv` installs the project (pip install -e .)")
        pytest.skip("the project is not installed in this virtualenv (make venv does it)")
    proc = subprocess.run([str(script), "--version"], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0 and proc.stdout.startswith("mds (market-data-store) "), proc.stderr


def test_requests_never_reach_the_database_or_redis():
    """The CLI is an HTTP client: nothing under app/cli imports the store's infrastructure."""
    for path in (ROOT / "app" / "cli").glob("*.py"):
        text = path.read_text()
        for forbidden in ("psycopg", "redis", "app.db", "app.queue", "app.jobs", "rq"):
            assert not re.search(rf"^\s*(from|import) {re.escape(forbidden)}\b", text, re.M), (path, forbidden)

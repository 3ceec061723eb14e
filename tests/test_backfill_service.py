"""Backfill through the real service (gunicorn + worker): POST /backfill/<job>, GET /jobs.

Sources are written at test time into a BACKFILL_SOURCE_DIR of the test's own, or served
by a real HTTP server on 127.0.0.1 (tests/support/file_server.py).
"""

from __future__ import annotations

import os
import signal
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime
from pathlib import Path

import psycopg
import pytest
import requests

from tests.support.backfill import START, bars, expected, stored, write_csv, write_ndjson
from tests.support.common import wait_for
from tests.support.file_server import FileServer
from tests.support.service import LOSS_ENV, NORMAL_LOSS_ENV, scrape

CAP = 3_000_000  # BACKFILL_MAX_DOWNLOAD_BYTES of the test service


def job_runs(url: str) -> list[dict]:
    with psycopg.connect(url) as conn, conn.cursor(row_factory=psycopg.rows.dict_row) as cur:
        return cur.execute("SELECT * FROM job_runs WHERE mode = 'backfill' ORDER BY id").fetchall()


@pytest.fixture
def source_dir(tmp_path) -> Path:
    path = tmp_path / "backfill"
    path.mkdir()
    return path


@pytest.fixture
def svc(database_url, service_factory, source_dir):
    service = service_factory(
        database_url,
        env={
            "BACKFILL_SOURCE_DIR": str(source_dir),
            "BACKFILL_MAX_DOWNLOAD_BYTES": str(CAP),
            "BACKFILL_URL_ALLOW": "127.0.0.1",  # the test file server
        },
    )
    service.migrate()
    return service


def load(svc, body: dict, status: str = "success", timeout: float = 60) -> dict:
    doc = svc.wait_job(svc.trigger("/backfill/bars_ohlcv", body), timeout)
    assert doc["status"] == status, doc
    return doc


# -- the API surface -----------------------------------------------------------------------------
def test_catalogue_unknown_jobs_and_every_kind_of_bad_parameter(svc, source_dir, tmp_path):
    doc = svc.get("/backfill").json()
    jobs = {j["name"]: j for j in doc["jobs"]}
    assert set(jobs) == {"bars_ohlcv", "aggregates"}
    assert jobs["bars_ohlcv"]["job"] == "backfill.bars_ohlcv"
    params = {p["name"]: p for p in jobs["bars_ohlcv"]["parameters"]}
    assert {"source", "sources", "preset", "columns", "dry_run"} <= set(params) and params["max_bad_rows"][
        "default"
    ] == 0
    assert set(jobs["bars_ohlcv"]["presets"]) == {"yahoo", "stooq", "polygon_aggs", "binance_klines"}
    assert doc["source_dir"] == str(source_dir.resolve())
    assert {p["name"] for p in jobs["aggregates"]["parameters"]} == {"start", "end", "name", "slice"}
    assert requests.get(svc.url + "/backfill", timeout=5).status_code == 401

    resp = svc.post("/backfill/nope", {})
    assert resp.status_code == 404 and resp.json()["known"] == ["aggregates", "bars_ohlcv"]
    assert "bars_ohlcv" in resp.json()["error"]

    write_csv(source_dir / "ok.csv", bars(2))
    (tmp_path / "outside.csv").write_text("x\n")
    os.symlink(tmp_path / "outside.csv", source_dir / "link.csv")
    bad = [
        ({}, "give either source (a path, glob or URL) or sources"),
        ({"source": "ok.csv", "colour": "red"}, "unknown field(s): colour"),
        ({"source": 42}, "source must be a non-empty string"),
        ({"source": "../outside.csv"}, "outside BACKFILL_SOURCE_DIR"),
        ({"source": "link.csv"}, "outside BACKFILL_SOURCE_DIR"),
        (
            {"source": "missing.csv"},
            "no file 'missing.csv' in BACKFILL_SOURCE_DIR (GET /backfill shows where BACKFILL_SOURCE_DIR resolves",
        ),
        ({"source": "nothing-*.csv"}, "no file matches the glob 'nothing-*.csv'"),
        ({"source": "ftp://127.0.0.1/x.csv"}, "scheme 'ftp' is not supported"),
        ({"source": "ok.csv", "format": "xml"}, "format must be one of ndjson, csv"),
        ({"source": "ok.csv", "max_bad_rows": -1}, "max_bad_rows must be an integer"),
        ({"source": "ok.csv", "max_bad_rows": True}, "max_bad_rows must be an integer"),
        ({"source": "ok.csv", "batch_rows": 0}, "batch_rows must be an integer"),
        ({"source": "ok.csv", "provider": "a,b"}, "provider must be printable ASCII"),
    ]
    for body, message in bad:
        resp = svc.post("/backfill/bars_ohlcv", body)
        assert resp.status_code == 400, (body, resp.text)
        assert message in resp.json()["error"], (body, resp.json())
    for body, message in [
        ({"start": "2024-01-01T00:00:00Z"}, "end is required"),
        ({"start": "yesterday", "end": "2024-01-02T00:00:00Z"}, "start is not an ISO 8601 time"),
        ({"start": "2024-01-02T00:00:00Z", "end": "2024-01-01T00:00:00Z"}, "start must be before end"),
        ({"start": "2024-01-01T00:00:00Z", "end": "2024-01-02T00:00:00Z", "name": "x"}, "name must be one of"),
        ({"start": "2024-01-01T00:00:00Z", "end": "2024-01-02T00:00:00Z", "slice": "soon"}, "slice:"),
        ({"start": "1000-01-01T00:00:00Z", "end": "8000-01-01T00:00:00Z", "slice": "1 hour"}, "slices"),
    ]:
        resp = svc.post("/backfill/aggregates", body)
        assert resp.status_code == 400 and message in resp.json()["error"], (body, resp.text)
    with psycopg.connect(svc.env["DATABASE_URL"]) as conn:
        assert conn.execute("SELECT count(*) FROM store_jobs WHERE job LIKE 'backfill.%'").fetchone()[0] == 0


# -- loading -------------------------------------------------------------------------------------
def test_ndjson_gzip_and_csv_from_the_directory_and_http_load_and_reload_without_duplicates(svc, source_dir):
    url = svc.env["DATABASE_URL"]
    files = {
        "a/plain.ndjson": (write_ndjson, bars(500, ("aa1", "aa2"))),
        "a/packed.ndjson.gz": (lambda p, r: write_ndjson(p, r, compress=True), bars(700, ("gz1",))),
        "b.csv": (write_csv, bars(300, ("cs1", "cs2", "cs3"))),
    }
    (source_dir / "a").mkdir()
    for name, (writer, rows) in files.items():
        writer(source_dir / name, rows)
    with FileServer(source_dir) as server:
        http_rows = bars(400, ("ht1",), provider="web")
        http_csv_rows = bars(300, ("ht2", "ht3"), provider="web")
        write_ndjson(source_dir / "web.ndjson.gz", http_rows, compress=True)
        write_csv(source_dir / "web.csv", http_csv_rows)
        sources = [(name, rows) for name, (_, rows) in files.items()] + [
            (f"{server.url}/web.ndjson.gz", http_rows),
            (f"{server.url}/web.csv", http_csv_rows),
        ]
        for source, rows in sources:
            doc = load(svc, {"source": source, "batch_rows": 128})
            result = doc["result"]
            assert result["rows_read"] == result["rows_written"] == len(rows), result
            assert result["rows_rejected"] == 0 and result["bad_rows"] == []
            assert result["compressed"] == source.endswith(".gz")
            symbols = sorted({r["symbol"] for r in rows})
            assert stored(url, symbols) == expected(rows), source
            assert datetime.fromisoformat(result["max_ts"]) == expected(rows)[3]
            assert doc["progress"]["rows_written"] == len(rows)

        # loading the same sources again leaves the table as it was
        for source, rows in sources:
            result = load(svc, {"source": source})["result"]
            assert result["rows_written"] == 0 and result["rows_unchanged"] == len(rows), result
    total = sum(len(rows) for _, rows in sources)
    with psycopg.connect(url) as conn:
        assert conn.execute("SELECT count(*) FROM bars_ohlcv").fetchone()[0] == total

    runs = job_runs(url)
    assert len(runs) == 10 and {r["status"] for r in runs} == {"success"}
    first = runs[0]
    assert first["job_name"] == "backfill.bars_ohlcv" and first["dataset_name"] == "bars_ohlcv"
    assert first["rows_written"] == 500 and first["rows_failed"] == 0 and first["provider"] == "prov"
    assert first["symbols"] == ["AA1", "AA2"] and first["min_ts"] == START
    assert first["metadata"]["last_heartbeat"] and first["completed_at"] and first["elapsed_ms"] >= 0
    assert runs[3]["provider"] == "web" and [r["rows_written"] for r in runs[5:]] == [0] * 5

    samples = wait_for(
        lambda: (m := scrape(svc)).get('sink_writes_total{outcome="unchanged",sink="bars_ohlcv"}') == total and m,
        30,
        message="sink metrics of every batch",
    )
    assert samples['sink_writes_total{outcome="success",sink="bars_ohlcv"}'] == total
    assert samples['sink_write_latency_count{sink="bars_ohlcv"}'] >= 10


def test_bad_rows_are_skipped_counted_and_sampled_up_to_max_bad_rows(svc, source_dir):
    url = svc.env["DATABASE_URL"]
    good = bars(40, ("ok1",))
    rows = (
        good[:10]
        + [{**good[0], "ts": "not a time"}]
        + good[10:20]
        + [b"{broken"]
        + [{**good[0], "open": "abc"}]
        + good[20:30]
        + [{**good[1], "low": 1000.0}]
        + good[30:]
    )
    write_ndjson(source_dir / "mixed.ndjson", rows)
    doc = load(svc, {"source": "mixed.ndjson", "batch_rows": 1000}, status="failed")
    assert (
        doc["error"] == "more than max_bad_rows=0 bad rows; first bad line 11: ts is not an ISO 8601 time: 'not a time'"
    )
    assert stored(url, ["ok1"])[0] == 0  # nothing of the failing batch was written
    doc = load(svc, {"source": "mixed.ndjson", "max_bad_rows": 3}, status="failed")
    assert doc["error"].startswith("more than max_bad_rows=3 bad rows; first bad line 11")

    result = load(svc, {"source": "mixed.ndjson", "max_bad_rows": 4})["result"]
    assert result["rows_read"] == 44 and result["rows_written"] == 40 and result["rows_rejected"] == 4
    assert [(b["line"], b["reason"].split(":")[0]) for b in result["bad_rows"]] == [
        (11, "ts is not an ISO 8601 time"),
        (22, "invalid JSON"),
        (23, "open is not a number"),
        (34, "low 1000.0 > high 101.5"),
    ]
    assert stored(url, ["ok1"]) == expected(good)
    failed, _, succeeded = job_runs(url)[-3:]
    assert failed["status"] == "failure" and "first bad line 11" in failed["error_message"]
    assert succeeded["rows_failed"] == 4 and succeeded["rows_written"] == 40
    samples = wait_for(
        lambda: (m := scrape(svc)).get('sink_writes_total{outcome="rejected",sink="bars_ohlcv"}') == 4 and m,
        30,
        message="rejected rows counted",
    )
    assert samples['sink_writes_total{outcome="success",sink="bars_ohlcv"}'] == 40


def test_http_errors_and_oversize_fail_the_job_with_the_reason(svc, source_dir):
    write_ndjson(source_dir / "big.ndjson", bars(20_000))  # more than CAP bytes
    with FileServer(source_dir) as server:
        doc = load(svc, {"source": f"{server.url}/missing.ndjson"}, status="failed")
        # the status code only: the reason phrase is the server's text, never repeated
        assert (
            doc["error"] == f"could not fetch the source: 127.0.0.1:{server.httpd.server_address[1]} answered HTTP 404"
        )
        doc = load(svc, {"source": f"{server.url}/big.ndjson"}, status="failed")
        assert f"larger than BACKFILL_MAX_DOWNLOAD_BYTES ({CAP} bytes)" in doc["error"]
        doc = load(svc, {"source": f"{server.url}/stream/big.ndjson"}, status="failed")
        assert f"larger than BACKFILL_MAX_DOWNLOAD_BYTES ({CAP} bytes)" in doc["error"]
    runs = job_runs(svc.env["DATABASE_URL"])
    assert [r["status"] for r in runs] == ["failure"] * 3
    assert "HTTP 404" in runs[0]["error_message"]


def test_single_flight_progress_while_running_and_cancel(svc, source_dir):
    url = svc.env["DATABASE_URL"]
    write_ndjson(source_dir / "slow.ndjson", bars(6000, ("sl1", "sl2", "sl3")))
    with FileServer(source_dir) as server:
        body = {"source": f"{server.url}/slow/slow.ndjson", "batch_rows": 500}
        with ThreadPoolExecutor(10) as pool:
            answers = list(pool.map(lambda _: svc.post("/backfill/bars_ohlcv", body), range(30)))
        assert {a.status_code for a in answers} == {202}
        assert len({a.json()["run_id"] for a in answers}) == 1
        run_id = answers[0].json()["run_id"]

        def progressing():
            doc = svc.get(f"/jobs/{run_id}").json()
            return doc["status"] == "running" and doc["progress"].get("rows_written", 0) > 0 and doc

        doc = wait_for(progressing, 30, message="progress of the running load")
        progress = doc["progress"]
        assert 0 < progress["rows_written"] <= progress["rows_read"] < 6000
        assert progress["rows_rejected"] == 0 and progress["rate"] > 0
        with psycopg.connect(url) as conn:
            running = conn.execute("SELECT status, metadata FROM job_runs ORDER BY id DESC LIMIT 1").fetchone()
        assert running[0] == "running" and running[1]["last_heartbeat"]

        assert svc.post(f"/jobs/{run_id}/cancel").status_code == 202
        assert svc.wait_job(run_id)["status"] == "cancelled"
        wait_for(lambda: job_runs(url)[-1]["status"] == "cancelled", 30, message="job_runs row cancelled")
        # once it is over, the same source can be loaded again, and it picks up where it stopped
        result = load(svc, {"source": f"{server.url}/slow/slow.ndjson", "batch_rows": 500})["result"]
    assert result["resumed_from"]["line"] > 0
    assert result["rows_read"] == 6000 and stored(url, ["sl1", "sl2", "sl3"]) == expected(
        bars(6000, ("sl1", "sl2", "sl3"))
    )


def test_aggregates_job_recomputes_the_rollups_over_a_window_in_slices(svc, source_dir):
    url = svc.env["DATABASE_URL"]
    rows = bars(2 * 60 * 30, ("ag1", "ag2"))  # 30 hours of minutes for two symbols
    write_ndjson(source_dir / "agg.ndjson", rows)
    load(svc, {"source": "agg.ndjson"})
    doc = svc.run_job(
        "/backfill/aggregates", {"start": "2024-02-05T00:00:00Z", "end": "2024-02-07T00:00:00Z", "slice": "6 hours"}
    )
    result = doc["result"]
    assert set(result["aggregates"]) == {"bars_ohlcv_1h", "bars_ohlcv_1d"}
    # 48 hours: 8 slices of 6 hours for the hourly rollup, 2 of one day (its bucket) for the daily one
    assert result["slice"] == "6 hours" and doc["progress"]["slices_started"] == 10
    with psycopg.connect(url) as conn:
        for agg, width in (("bars_ohlcv_1h", "1 hour"), ("bars_ohlcv_1d", "1 day")):
            got = conn.execute(
                f"SELECT symbol, bucket, open, high, low, close, volume FROM {agg} ORDER BY 1, 2"
            ).fetchall()
            want = conn.execute(
                """SELECT symbol, date_bin(%s::interval, ts, '1970-01-01'), (array_agg(open ORDER BY ts))[1], max(high),
                          min(low), (array_agg(close ORDER BY ts DESC))[1], sum(volume)
                   FROM bars_ohlcv GROUP BY 1, 2 ORDER BY 1, 2""",
                (width,),
            ).fetchall()
            assert got == want and len(got) > 0
    assert job_runs(url)[-1]["job_name"] == "backfill.aggregates"
    assert job_runs(url)[-1]["status"] == "success"


def test_a_killed_worker_leaves_a_checkpoint_and_the_next_run_resumes_from_it(svc, source_dir):
    url = svc.env["DATABASE_URL"]
    svc.restart(LOSS_ENV)  # the killed job is declared lost 6 s after its last heartbeat
    rows = bars(8000, ("kl1", "kl2"))
    write_ndjson(source_dir / "kill.ndjson", rows)
    with FileServer(source_dir) as server:
        body = {"source": f"{server.url}/slow/kill.ndjson", "batch_rows": 400}
        run_id = svc.trigger("/backfill/bars_ohlcv", body)

        def checkpointed():
            with psycopg.connect(url) as conn:
                row = conn.execute("SELECT line FROM store_backfill_checkpoints").fetchone()
            return row and row[0] > 0 and row[0]

        wait_for(checkpointed, 30, message="a committed batch")
        worker = svc.workers[0]
        os.killpg(worker.pid, signal.SIGKILL)
        worker.wait(10)
        with psycopg.connect(url) as conn:
            line = conn.execute("SELECT line FROM store_backfill_checkpoints").fetchone()[0]
            committed = conn.execute("SELECT count(*) FROM bars_ohlcv").fetchone()[0]
        assert committed == line  # every committed row is counted by the checkpoint, no more
        svc.start_worker()
        lost = svc.wait_job(run_id, timeout=60)
        assert lost["status"] == "failed" and "worker lost" in lost["error"]

        svc.restart(NORMAL_LOSS_ENV)  # the resumed run is not about losing a worker
        result = load(svc, body)["result"]
    assert result["resumed_from"]["line"] == line and result["resumed_from"]["run_id"] == run_id
    assert result["rows_read"] == 8000 and result["rows_written"] == 8000
    assert stored(url, ["kl1", "kl2"]) == expected(rows)
    dead, resumed = job_runs(url)
    assert dead["status"] == "failure" and "interrupted" in dead["error_message"]
    assert resumed["status"] == "success" and resumed["rows_written"] == 8000

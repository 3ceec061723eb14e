"""Uploading, listing and removing source files (PUT/GET/DELETE /backfill/sources) on the real
service: streamed to disk, renamed into place when complete, bounded, never escaping
BACKFILL_SOURCE_DIR; a 200 MB upload measured for the API's memory.
"""

from __future__ import annotations

import gzip
import hashlib
import os
import socket
import threading
from pathlib import Path

import pytest

from tests.support.common import TOKEN, wait_for

pytestmark = pytest.mark.slow

LIMIT = 300_000_000  # BACKFILL_UPLOAD_MAX_BYTES of the test service


@pytest.fixture
def source_dir(tmp_path) -> Path:
    path = tmp_path / "backfill"
    path.mkdir()
    return path


@pytest.fixture
def svc(database_url, service_factory, source_dir):
    service = service_factory(
        database_url,
        env={"BACKFILL_SOURCE_DIR": str(source_dir), "BACKFILL_UPLOAD_MAX_BYTES": str(LIMIT)},
    )
    service.migrate()
    return service


def leftovers(source_dir: Path) -> list[str]:
    partial = source_dir / "uploads" / ".partial"
    return sorted(os.listdir(partial)) if partial.exists() else []


def test_upload_list_load_and_delete(svc, source_dir):
    data = (
        b"Date,Open,High,Low,Close,Adj Close,Volume\n"
        b"2024-03-01,179.550003,180.529999,177.380005,179.660004,178.940002,73488000\n"
    )
    blob = gzip.compress(data)
    resp = svc.put(
        "/backfill/sources/yahoo/AAPL.csv.gz", data=blob, headers={"Content-Type": "application/octet-stream"}
    )
    assert resp.status_code == 201, resp.text
    assert resp.json() == {
        "name": "yahoo/AAPL.csv.gz",
        "source": "uploads/yahoo/AAPL.csv.gz",
        "bytes": len(blob),
        "sha256": hashlib.sha256(blob).hexdigest(),
    }
    assert (source_dir / "uploads" / "yahoo" / "AAPL.csv.gz").read_bytes() == blob
    (source_dir / "own.csv").write_text("x\n")
    listed = svc.get("/backfill/sources?prefix=uploads/").json()
    assert [f["name"] for f in listed["files"]] == ["uploads/yahoo/AAPL.csv.gz"] and not listed["truncated"]
    assert listed["files"][0]["bytes"] == len(blob) and listed["source_dir"] == str(source_dir.resolve())
    assert [f["name"] for f in svc.get("/backfill/sources").json()["files"]] == ["own.csv", "uploads/yahoo/AAPL.csv.gz"]

    doc = svc.wait_job(
        svc.trigger(
            "/backfill/bars_ohlcv", {"source": "uploads/yahoo/AAPL.csv.gz", "preset": "yahoo", "symbol": "AAPL"}
        )
    )
    assert doc["status"] == "success" and doc["result"]["rows_written"] == 1, doc

    assert svc.session.delete(svc.url + "/backfill/sources/yahoo/AAPL.csv.gz", timeout=10).json()["deleted"]
    assert svc.session.delete(svc.url + "/backfill/sources/yahoo/AAPL.csv.gz", timeout=10).status_code == 404
    assert svc.session.delete(svc.url + "/backfill/sources/own.csv", timeout=10).status_code == 404  # not an upload
    assert (source_dir / "own.csv").exists()


@pytest.mark.parametrize(
    "name", [".hidden.csv", "a/.partial/x.csv", "a%2F..%2F..%2Fescape.csv", "sp ace.csv", "a" * 200]
)
def test_names_that_could_escape_or_hide_are_refused(svc, source_dir, name):
    resp = svc.put(f"/backfill/sources/{name}", data=b"x")
    assert resp.status_code in (400, 404), resp.text
    assert not list(source_dir.parent.glob("escape.csv")) and leftovers(source_dir) == []


def test_a_symlinked_upload_directory_pointing_outside_is_refused(svc, source_dir, tmp_path):
    outside = tmp_path / "outside"
    outside.mkdir()
    (source_dir / "uploads").mkdir()
    os.symlink(outside, source_dir / "uploads" / "out")
    resp = svc.put("/backfill/sources/out/x.csv", data=b"x")
    assert resp.status_code == 400 and "outside BACKFILL_SOURCE_DIR" in resp.json()["error"], resp.text
    assert list(outside.iterdir()) == []


def test_over_the_limit_is_413_announced_or_streamed_and_nothing_is_kept(database_url, service_factory, source_dir):
    svc = service_factory(
        database_url, env={"BACKFILL_SOURCE_DIR": str(source_dir), "BACKFILL_UPLOAD_MAX_BYTES": "1000"}
    )
    resp = svc.put("/backfill/sources/big.csv", data=b"x" * 1001)
    assert resp.status_code == 413 and "BACKFILL_UPLOAD_MAX_BYTES (1000 bytes)" in resp.json()["error"]
    resp = svc.put("/backfill/sources/big.csv", data=iter([b"x" * 600, b"x" * 600]))  # chunked: no length up front
    assert resp.status_code == 413, resp.text
    assert not (source_dir / "uploads" / "big.csv").exists() and leftovers(source_dir) == []
    assert svc.put("/backfill/sources/small.csv", data=b"x" * 1000).status_code == 201


def test_an_interrupted_upload_leaves_nothing_loadable(svc, source_dir):
    with socket.create_connection(("127.0.0.1", svc.port)) as sock:
        sock.sendall(
            (
                "PUT /backfill/sources/cut.csv.gz HTTP/1.1\r\nHost: x\r\n"
                f"Authorization: Bearer {TOKEN}\r\nContent-Length: 10000000\r\n\r\n"
            ).encode()
            + b"\x1f\x8b"
            + b"y" * 2_000_000
        )
    wait_for(lambda: leftovers(source_dir) == [] and (source_dir / "uploads").exists(), 30, message="partial removed")
    assert not (source_dir / "uploads" / "cut.csv.gz").exists()
    resp = svc.post("/backfill/bars_ohlcv", {"source": "uploads/cut.csv.gz"})
    assert resp.status_code == 400


def _rss_kb(pid: int) -> int:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


def _api_pids(master: int) -> list[int]:
    pids = [master]
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat") as f:
                    if int(f.read().rsplit(")", 1)[1].split()[1]) == master:
                        pids.append(int(entry))
            except (OSError, ValueError, IndexError):
                continue
    return pids


def test_a_200_mb_gzip_upload_keeps_the_api_memory_flat(svc, source_dir, tmp_path):
    path = tmp_path / "big.ndjson.gz"
    with gzip.open(path, "wb", compresslevel=0) as out:  # 200 MB of random content, stored as gzip
        for _ in range(200):
            out.write(os.urandom(1 << 20))
    size = path.stat().st_size
    pids = _api_pids(svc.api.pid)
    base = sum(_rss_kb(p) for p in pids)
    peak = [base]
    done = threading.Event()

    def sample():
        while not done.wait(0.05):
            try:
                peak[0] = max(peak[0], sum(_rss_kb(p) for p in pids))
            except OSError:
                pass

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    with open(path, "rb") as body:
        resp = svc.put("/backfill/sources/big.ndjson.gz", data=body, timeout=300)
    done.set()
    sampler.join()
    assert resp.status_code == 201 and resp.json()["bytes"] == size, resp.text
    growth_mb = (peak[0] - base) / 1024
    print(f"upload of {size / 1e6:.0f} MB: API RSS {base / 1024:.0f} MB before, peak growth {growth_mb:.1f} MB")
    assert growth_mb < 50
    assert (source_dir / "uploads" / "big.ndjson.gz").stat().st_size == size

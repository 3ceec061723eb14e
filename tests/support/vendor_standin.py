"""A vendor's file server that the test holds mid-file: a real HTTP server on 127.0.0.1.

`GatedSource(body, split_at)` answers `GET /<anything>` with `Content-Length: len(body)`,
sends the first `split_at` bytes, then waits until the test calls `release()` before it
sends the rest. A backfill reading it stays `running` with the first part's progress for
as long as the test needs (a live bar, a cancel from the page or the CLI), with no timing
involved. `release()` at exit lets the handler finish.

Cancelling such a job: the worker terminates the job's database sessions at once, but
the reader thread stays inside the blocked socket read until bytes arrive or the read
timeout (60 s) passes, and closing the source waits for it. Tests that cancel therefore
call `release_when_stopped`: once the job's sessions are gone (it can write nothing more),
the rest of the file is sent and the job ends `cancelled` without waiting for the timeout.
"""

from __future__ import annotations

import shutil
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import psycopg

from tests.support.common import wait_for
from tests.support.db import create_database, drop_database
from tests.support.service import Service

HOLD_LIMIT_S = 120.0  # the handler never waits longer than this, whatever the test does


class GatedSource:
    def __init__(self, body: bytes, split_at: int, name: str = "bars.ndjson"):
        self.body, self.split_at, self.name = body, split_at, name
        self.gate = threading.Event()
        self.held = threading.Event()  # set once the first part is out
        source = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                self.send_response(200)
                self.send_header("Content-Type", "application/x-ndjson")
                self.send_header("Content-Length", str(len(source.body)))
                self.end_headers()
                try:
                    self.wfile.write(source.body[: source.split_at])
                    self.wfile.flush()
                    source.held.set()
                    source.gate.wait(HOLD_LIMIT_S)
                    self.wfile.write(source.body[source.split_at :])
                except (BrokenPipeError, ConnectionResetError):
                    pass  # the job was cancelled and hung up

            def log_message(self, *_args) -> None:
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.httpd.server_address[1]}/{self.name}"

    def release(self) -> None:
        self.gate.set()

    def release_when_stopped(self, database_url: str, run_id: str) -> None:
        """Release once the worker has terminated the job's sessions (a cancel took hold)."""

        def sessions() -> int:
            with psycopg.connect(database_url, autocommit=True) as conn:
                row = conn.execute(
                    "SELECT count(*) FROM pg_stat_activity WHERE application_name = %s", (f"store-job:{run_id}",)
                ).fetchone()
            return row[0] if row else 0

        wait_for(lambda: sessions() == 0, 60, message=f"the sessions of job {run_id} to be terminated")
        self.release()

    def __enter__(self) -> GatedSource:
        self.thread.start()
        return self

    def __exit__(self, *_exc) -> None:
        self.release()
        self.httpd.shutdown()
        self.httpd.server_close()


def gated_source_service(redis_server, tmp_path_factory):
    """A module's gunicorn + worker for tests that read from a `GatedSource`: a fresh migrated
    database, a source directory (`service.sources`), and the stalled-download window lifted,
    since the stand-in holds its file half-sent for as long as a test needs (the 30 s limit
    under 1 KiB/s is not what these tests are about). A generator: `yield from` it in a fixture."""
    if redis_server.proc is None or redis_server.proc.poll() is not None:
        redis_server.start()
    sources = tmp_path_factory.mktemp("sources")
    name, url = create_database()
    env = {"BACKFILL_SOURCE_DIR": str(sources), "BACKFILL_RATE_WINDOW_SECONDS": "600"}
    service = Service(url, redis_server.url, env).start()
    service.sources = sources
    service.migrate()
    yield service
    service.stop()
    shutil.rmtree(service.logdir, ignore_errors=True)
    drop_database(name)

"""gunicorn settings: `gunicorn -c gunicorn.conf.py` serves the API on $HOST:$PORT (0.0.0.0:8082;
`make run` sets HOST=127.0.0.1)."""

import os
import shutil
import sys
import tempfile

# Prometheus multiprocess mode: one directory shared by the workers, wiped at start. It
# lives under the temporary directory (/tmp in the image, a tmpfs in compose), so the
# application directory can stay read-only. prometheus_client reads the variable when
# it is imported, so it is set before anything imports it; Settings reads it too.
_metrics_dir = os.environ.setdefault(
    "PROMETHEUS_MULTIPROC_DIR", os.path.join(tempfile.gettempdir(), "market-data-store-metrics")
)
raw_env = [f"PROMETHEUS_MULTIPROC_DIR={_metrics_dir}"]

# Configuration errors stop the master with one line, before any worker forks.
from app.config import ConfigError, load_settings  # noqa: E402

try:
    _settings = load_settings()
except ConfigError as _exc:
    sys.stderr.write(f"market-data-store: {_exc}\n")
    sys.exit(2)

from app import logs  # noqa: E402

wsgi_app = "app:create_app()"
_host = f"[{_settings.host}]" if ":" in _settings.host and not _settings.host.startswith("[") else _settings.host
bind = f"{_host}:{_settings.port}"
workers = int(os.environ.get("WEB_CONCURRENCY", "2"))
threads = int(os.environ.get("GUNICORN_THREADS", "4"))
worker_class = "gthread"
timeout = 30
graceful_timeout = int(os.environ.get("GUNICORN_GRACEFUL_TIMEOUT", "25"))
keepalive = 5
limit_request_field_size = 8190
accesslog = None  # the app logs each request itself, with its request id
errorlog = "-"
loglevel = _settings.log_level.lower()
logconfig_dict = logs.logging_dict(_settings.log_level, _settings.log_format)
control_socket_disable = True  # gunicorn >= 25: no control socket in a read-only container
# Worker heartbeat files in memory (/dev/shm is a tmpfs in every container), not on the
# image's overlay filesystem where a slow disk can stall heartbeats.
if os.path.isdir("/dev/shm") and os.access("/dev/shm", os.W_OK):
    worker_tmp_dir = "/dev/shm"


def _json_error(sock, status_int, reason, mesg):
    """gunicorn's own rejections (oversized or malformed headers, bad request lines) are
    JSON `{"error": ...}` like every other error, instead of gunicorn's HTML page."""
    import json

    from gunicorn.util import write_nonblock

    body = json.dumps({"error": f"{reason.lower()}: {mesg}"}).encode()
    head = (
        f"HTTP/1.1 {status_int} {reason}\r\nConnection: close\r\nContent-Type: application/json\r\n"
        f"Content-Length: {len(body)}\r\n\r\n"
    )
    write_nonblock(sock, head.encode("latin-1") + body)


def post_fork(server, worker):
    from gunicorn import util

    util.write_error = _json_error


def post_worker_init(worker):
    """The app is loaded in this worker: start its process-wide work (the reaper sweeper,
    after the ledger's bootstrap). Nothing of it runs in the master or before the fork."""
    from app import resources_of

    resources_of(worker.wsgi).start()


def on_starting(server):
    shutil.rmtree(_metrics_dir, ignore_errors=True)
    os.makedirs(_metrics_dir, exist_ok=True)
    logs.configure(_settings.log_level, _settings.secrets(), _settings.log_format)
    logs.get("gunicorn").info("starting market-data-store API", bind=bind, workers=workers, threads=threads)


def worker_exit(server, worker):
    from app import resources_of

    if getattr(worker, "wsgi", None) is not None:
        resources_of(worker.wsgi).close()  # say goodbye to Postgres instead of dropping the connections


def child_exit(server, worker):
    from prometheus_client import multiprocess

    multiprocess.mark_process_dead(worker.pid)


def worker_int(worker):
    logs.get("gunicorn").info("worker interrupted", pid=worker.pid)

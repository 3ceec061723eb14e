# market-data-store: one image, two processes.
#   API (default):  gunicorn -c gunicorn.conf.py      -> $HOST:$PORT (0.0.0.0:8082)
#   worker:         python -m worker                  (compose `command:` override)
# See docs/deployment.md. tests/test_container.py checks this file without a Docker engine.
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_ROOT_USER_ACTION=ignore \
    PORT=8082

# The runtime user first (uid/gid 999, fails loudly if the base image ever takes them),
# then curl for the health check; apt lists removed in the same layer.
RUN groupadd --system --gid 999 appuser \
 && useradd --system --uid 999 --gid appuser --no-create-home --home-dir /nonexistent \
      --shell /usr/sbin/nologin appuser \
 && apt-get update \
 && apt-get install -y --no-install-recommends curl \
 && rm -rf /var/lib/apt/lists/*

WORKDIR /app

# Dependencies in their own layer: rebuilt only when requirements.txt changes.
COPY requirements.txt ./
RUN pip install -r requirements.txt

# The code, owned by root and read-only for appuser (.dockerignore keeps VCS, tests,
# caches and local data out). Byte-compiled here because nothing may write into /app at run time.
COPY . .
RUN python -m compileall -q /app

# Everything the processes write goes to the temporary directory: the Prometheus
# multiprocess directory ($TMPDIR or /tmp, see gunicorn.conf.py; a tmpfs in compose)
# and gunicorn's worker heartbeat files (/dev/shm).
USER appuser

EXPOSE 8082

# Probes the port the API really listens on: PORT may differ from 8082 (host networking).
HEALTHCHECK --interval=10s --timeout=3s --retries=3 --start-period=20s \
  CMD curl -fsS "http://localhost:${PORT:-8082}/health" || exit 1

# SIGTERM: gunicorn stops accepting, lets requests finish (graceful_timeout), exits 0;
# the worker finishes its current job and exits 0.
CMD ["gunicorn", "-c", "gunicorn.conf.py"]

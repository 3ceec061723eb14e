"""Settings: read once from the environment (and an optional `.env`) into one object.

Every process (API worker, job worker, scripts) calls :func:`load_settings` once at
start. A missing or bad value raises :class:`ConfigError` with one line naming the
variable; the entry points print that line and exit non-zero.
"""

from __future__ import annotations

import os
import re
import sys
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

from app.intervals import IntervalError, parse_interval
from app.netpolicy import AllowList, PolicyError

VERSION = "0.5.0"
SERVICE = "market-data-store"
DEFAULT_ADMIN_TOKEN = "iamalive"
PROJECT_ROOT = Path(__file__).resolve().parent.parent

_DB_SCHEMES = {"postgres", "postgresql", "postgresql+psycopg"}
_LOG_LEVELS = {"DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"}


class ConfigError(Exception):
    """A configuration value is missing or unusable. The message is one line."""


@dataclass(frozen=True)
class Settings:
    database_url: str  # normalised to postgresql:// (libpq / psycopg form)
    redis_url: str = "redis://redis:6379/0"
    registry_url: str = "http://registry:8080"  # "" when REGISTRY_URL=off: drift checks disabled
    registry_track: str = "v1"
    host: str = "0.0.0.0"  # the API's bind address (make run: 127.0.0.1)
    port: int = 8082
    admin_token: str = field(default=DEFAULT_ADMIN_TOKEN, repr=False)
    log_level: str = "INFO"
    log_format: str = "json"  # json | console (default: console when stderr is a terminal)
    pulse_enabled: bool = True
    event_bus_backend: str = "inmem"
    md_namespace: str = "mdp"
    queue_name: str = "store"
    # job supervision
    heartbeat_interval: float = 5.0  # seconds between a running job's heartbeats
    lost_after: float = 30.0  # a running job without heartbeat this long is 'worker lost'
    requeue_after: float = 10.0  # a queued job missing from Redis this long is re-enqueued
    job_timeout: float = 3600.0  # default wall-clock limit of one job
    kind_timeouts: tuple[tuple[str, float], ...] = ()  # JOB_TIMEOUT_<KIND>_SECONDS overrides
    # schedules (None = disabled)
    retention_every: timedelta | None = timedelta(days=1)
    refresh_every: timedelta | None = timedelta(minutes=5)
    drift_every: timedelta | None = timedelta(minutes=5)
    # database safety
    lock_timeout_ms: int = 5000
    statement_timeout_ms: int = 15 * 60 * 1000
    # sources
    backfill_source_dir: str = "/data/backfill"
    backfill_max_download_bytes: int = 2 * 1024**3
    backfill_upload_max_bytes: int = 5 * 1024**3  # PUT /backfill/sources/<name>
    backfill_max_files: int = 5000  # files one glob / sources list may fan out to
    backfill_max_file_bytes: int = 64 * 1024**3  # a local source file
    backfill_max_decompressed_bytes: int = 64 * 1024**3  # what a gzip source may expand to
    backfill_max_gzip_ratio: float = 200.0  # decompressed / compressed, checked past 16 MiB
    backfill_max_line_bytes: int = 1024 * 1024  # one line (record) of a source
    backfill_max_blank_lines: int = 100_000  # blank lines a source may hold
    backfill_download_deadline: float = 3600.0  # seconds from connect to the last byte
    backfill_min_rate: int = 1024  # bytes/s a download must average over each rate window
    backfill_rate_window: float = 30.0  # seconds: the rate window, and the limit for headers
    backfill_url_allow: AllowList = field(default_factory=AllowList)  # empty: URL sources off
    backfill_time_min: datetime = datetime(1900, 1, 1, tzinfo=UTC)  # rows before it are refused
    backfill_time_ahead: timedelta = timedelta(days=2)  # rows after now + this are refused
    backfill_max_partitions_per_batch: int = 2000
    # the job ledger
    job_queue_max: int = 1000  # queued jobs at most; a trigger past it is 429
    job_history_days: int = 90  # finished jobs older than this are pruned
    housekeeping_every: timedelta | None = timedelta(hours=1)
    # http
    max_body_bytes: int = 1024 * 1024
    health_timeout: float = 1.0
    # metrics: the API processes' shared multiprocess directory (gunicorn.conf.py sets it)
    prometheus_multiproc_dir: str | None = None

    @property
    def yoyo_url(self) -> str:
        """The database URL in the form yoyo needs to load psycopg 3."""
        return "postgresql+psycopg" + self.database_url[len("postgresql") :]

    @property
    def drift_enabled(self) -> bool:
        """False with REGISTRY_URL=off: no drift checks, the registry health component says so."""
        return bool(self.registry_url)

    @property
    def using_default_token(self) -> bool:
        return self.admin_token == DEFAULT_ADMIN_TOKEN

    def secrets(self) -> list[str]:
        """Values that must never appear in logs, metrics or job documents."""
        out = [self.admin_token]
        for url in (self.database_url, self.redis_url):
            password = urlsplit(url).password
            if password:
                out.append(password)
        return [s for s in out if s and len(s) >= 4]


def normalise_database_url(raw: str) -> str:
    """Accept postgres://, postgresql:// and postgresql+psycopg://; return postgresql://."""
    try:
        parts = urlsplit(raw)
    except ValueError as exc:
        raise ConfigError(f"DATABASE_URL is not a valid URL: {exc}") from None
    if parts.scheme not in _DB_SCHEMES:
        raise ConfigError("DATABASE_URL must start with postgres://, postgresql:// or postgresql+psycopg://")
    if not parts.hostname and "host=" not in parts.query:
        raise ConfigError("DATABASE_URL has no host")
    try:
        parts.port  # noqa: B018 - raises on a non-numeric port
    except ValueError:
        raise ConfigError("DATABASE_URL has an invalid port") from None
    return urlunsplit(("postgresql",) + tuple(parts[1:]))


def _bool(name: str, raw: str) -> bool:
    value = raw.strip().lower()
    if value in {"1", "true", "yes", "on"}:
        return True
    if value in {"0", "false", "no", "off"}:
        return False
    raise ConfigError(f"{name} must be true or false, got {raw!r}")


def _int(name: str, raw: str, low: int, high: int) -> int:
    try:
        value = int(raw)
    except ValueError:
        raise ConfigError(f"{name} must be an integer, got {raw!r}") from None
    if not low <= value <= high:
        raise ConfigError(f"{name} must be between {low} and {high}, got {value}")
    return value


def _float(name: str, raw: str, low: float) -> float:
    try:
        value = float(raw)
    except ValueError:
        raise ConfigError(f"{name} must be a number, got {raw!r}") from None
    if value < low:
        raise ConfigError(f"{name} must be at least {low}, got {value}")
    return value


def _schedule(name: str, raw: str) -> timedelta | None:
    if raw.strip().lower() in {"off", "0", "none", "disabled"}:
        return None
    try:
        every = parse_interval(raw)
    except IntervalError as exc:
        raise ConfigError(f"{name}: {exc} (or 'off')") from None
    if every < timedelta(seconds=10):
        raise ConfigError(f"{name} must be at least 10 seconds, got {raw!r}")
    return every


def _url(name: str, raw: str, schemes: set[str]) -> str:
    scheme = urlsplit(raw).scheme
    if scheme not in schemes or not urlsplit(raw).netloc:
        raise ConfigError(f"{name} must be a {'/'.join(sorted(schemes))} URL, got a {scheme or 'schemeless'} value")
    return raw.rstrip("/") if scheme.startswith("http") else raw


def _host(raw: str) -> str:
    value = raw.strip()
    if not re.fullmatch(r"[A-Za-z0-9.:\-\[\]]{1,255}", value):
        raise ConfigError(f"HOST must be an address to bind such as 127.0.0.1 or 0.0.0.0, got {raw[:80]!r}")
    return value


def _log_format(raw: str | None) -> str:
    """LOG_FORMAT: json or console; unset, console when stderr is a terminal, else json."""
    if raw is None:
        return "console" if sys.stderr is not None and sys.stderr.isatty() else "json"
    value = raw.strip().lower()
    if value not in {"json", "console"}:
        raise ConfigError(f"LOG_FORMAT must be json or console, got {raw[:40]!r}")
    return value


def load_settings(environ: dict[str, str] | None = None, dotenv: bool = True) -> Settings:
    """Build the settings from `environ` (default: the process environment).

    A `.env` file in the working directory is read first when `dotenv` is true; values
    already in the environment win over it.
    """
    if environ is None:
        if dotenv:
            from dotenv import load_dotenv

            load_dotenv(Path.cwd() / ".env", override=False)
        environ = dict(os.environ)
    env = {k: v for k, v in environ.items() if v != ""}

    if "DATABASE_URL" not in env:
        raise ConfigError("DATABASE_URL is required (e.g. postgresql://user:pass@host:5432/market_data)")
    kw: dict = {"database_url": normalise_database_url(env["DATABASE_URL"])}

    if "REDIS_URL" in env:
        kw["redis_url"] = _url("REDIS_URL", env["REDIS_URL"], {"redis", "rediss", "unix"})
    if "REGISTRY_URL" in env:
        if env["REGISTRY_URL"].strip().lower() == "off":
            kw["registry_url"] = ""
        else:
            kw["registry_url"] = _url("REGISTRY_URL", env["REGISTRY_URL"], {"http", "https"})
    if "REGISTRY_TRACK" in env:
        if env["REGISTRY_TRACK"] not in {"v1", "v2"}:
            raise ConfigError(f"REGISTRY_TRACK must be v1 or v2, got {env['REGISTRY_TRACK']!r}")
        kw["registry_track"] = env["REGISTRY_TRACK"]
    if "HOST" in env:
        kw["host"] = _host(env["HOST"])
    if "PORT" in env:
        kw["port"] = _int("PORT", env["PORT"], 1, 65535)
    if "ADMIN_TOKEN" in env:
        token = env["ADMIN_TOKEN"]
        if len(token) < 8 and token != DEFAULT_ADMIN_TOKEN:
            raise ConfigError("ADMIN_TOKEN must be at least 8 characters")
        if not token.isprintable() or not token.isascii() or " " in token:
            raise ConfigError("ADMIN_TOKEN must be printable ASCII without spaces")
        kw["admin_token"] = token
    if "LOG_LEVEL" in env:
        level = env["LOG_LEVEL"].upper()
        if level not in _LOG_LEVELS:
            raise ConfigError(f"LOG_LEVEL must be one of {', '.join(sorted(_LOG_LEVELS))}, got {env['LOG_LEVEL']!r}")
        kw["log_level"] = level
    kw["log_format"] = _log_format(env.get("LOG_FORMAT"))
    if "PULSE_ENABLED" in env:
        kw["pulse_enabled"] = _bool("PULSE_ENABLED", env["PULSE_ENABLED"])
    if "EVENT_BUS_BACKEND" in env:
        if env["EVENT_BUS_BACKEND"] not in {"inmem", "redis"}:
            raise ConfigError(f"EVENT_BUS_BACKEND must be inmem or redis, got {env['EVENT_BUS_BACKEND']!r}")
        kw["event_bus_backend"] = env["EVENT_BUS_BACKEND"]
    if "MD_NAMESPACE" in env:
        kw["md_namespace"] = env["MD_NAMESPACE"]
    if "STORE_QUEUE" in env:
        kw["queue_name"] = env["STORE_QUEUE"]
    if "JOB_HEARTBEAT_SECONDS" in env:
        kw["heartbeat_interval"] = _float("JOB_HEARTBEAT_SECONDS", env["JOB_HEARTBEAT_SECONDS"], 0.2)
    if "JOB_LOST_AFTER_SECONDS" in env:
        kw["lost_after"] = _float("JOB_LOST_AFTER_SECONDS", env["JOB_LOST_AFTER_SECONDS"], 1.0)
    if "JOB_REQUEUE_AFTER_SECONDS" in env:
        kw["requeue_after"] = _float("JOB_REQUEUE_AFTER_SECONDS", env["JOB_REQUEUE_AFTER_SECONDS"], 1.0)
    if "JOB_TIMEOUT_SECONDS" in env:
        kw["job_timeout"] = _float("JOB_TIMEOUT_SECONDS", env["JOB_TIMEOUT_SECONDS"], 1.0)
    kind_timeouts = []
    for name in sorted(env):
        match = re.fullmatch(r"JOB_TIMEOUT_([A-Z][A-Z0-9_]*)_SECONDS", name)
        if match:
            kind_timeouts.append((match.group(1).lower(), _float(name, env[name], 1.0)))
    if kind_timeouts:
        kw["kind_timeouts"] = tuple(kind_timeouts)
    if "RETENTION_SCHEDULE" in env:
        kw["retention_every"] = _schedule("RETENTION_SCHEDULE", env["RETENTION_SCHEDULE"])
    if "REFRESH_SCHEDULE" in env:
        kw["refresh_every"] = _schedule("REFRESH_SCHEDULE", env["REFRESH_SCHEDULE"])
    if "DRIFT_CHECK_SCHEDULE" in env:
        kw["drift_every"] = _schedule("DRIFT_CHECK_SCHEDULE", env["DRIFT_CHECK_SCHEDULE"])
    if "DB_LOCK_TIMEOUT_MS" in env:
        kw["lock_timeout_ms"] = _int("DB_LOCK_TIMEOUT_MS", env["DB_LOCK_TIMEOUT_MS"], 1, 3_600_000)
    if "DB_STATEMENT_TIMEOUT_MS" in env:
        kw["statement_timeout_ms"] = _int("DB_STATEMENT_TIMEOUT_MS", env["DB_STATEMENT_TIMEOUT_MS"], 1, 86_400_000)
    if "BACKFILL_SOURCE_DIR" in env:
        kw["backfill_source_dir"] = env["BACKFILL_SOURCE_DIR"]
    if "BACKFILL_MAX_DOWNLOAD_BYTES" in env:
        kw["backfill_max_download_bytes"] = _int(
            "BACKFILL_MAX_DOWNLOAD_BYTES", env["BACKFILL_MAX_DOWNLOAD_BYTES"], 1, 2**50
        )
    if "BACKFILL_UPLOAD_MAX_BYTES" in env:
        kw["backfill_upload_max_bytes"] = _int("BACKFILL_UPLOAD_MAX_BYTES", env["BACKFILL_UPLOAD_MAX_BYTES"], 1, 2**50)
    if "BACKFILL_MAX_FILES" in env:
        kw["backfill_max_files"] = _int("BACKFILL_MAX_FILES", env["BACKFILL_MAX_FILES"], 1, 1_000_000)
    kw.update(_backfill_limits(env))
    if "JOB_QUEUE_MAX" in env:
        kw["job_queue_max"] = _int("JOB_QUEUE_MAX", env["JOB_QUEUE_MAX"], 1, 10_000_000)
    if "JOB_HISTORY_DAYS" in env:
        kw["job_history_days"] = _int("JOB_HISTORY_DAYS", env["JOB_HISTORY_DAYS"], 1, 36_500)
    if "HOUSEKEEPING_SCHEDULE" in env:
        kw["housekeeping_every"] = _schedule("HOUSEKEEPING_SCHEDULE", env["HOUSEKEEPING_SCHEDULE"])
    if "PROMETHEUS_MULTIPROC_DIR" in env:
        kw["prometheus_multiproc_dir"] = env["PROMETHEUS_MULTIPROC_DIR"]
    if "HEALTH_TIMEOUT_SECONDS" in env:
        kw["health_timeout"] = _float("HEALTH_TIMEOUT_SECONDS", env["HEALTH_TIMEOUT_SECONDS"], 0.05)
    return Settings(**kw)


def _backfill_limits(env: dict[str, str]) -> dict:
    """The BACKFILL_* bounds on sources and rows (docs/backfill.md lists them)."""
    kw: dict = {}
    ints = {
        "BACKFILL_MAX_FILE_BYTES": ("backfill_max_file_bytes", 1, 2**50),
        "BACKFILL_MAX_DECOMPRESSED_BYTES": ("backfill_max_decompressed_bytes", 1, 2**50),
        "BACKFILL_MAX_LINE_BYTES": ("backfill_max_line_bytes", 256, 256 * 1024**2),
        "BACKFILL_MAX_BLANK_LINES": ("backfill_max_blank_lines", 0, 2**40),
        "BACKFILL_MIN_RATE_BYTES": ("backfill_min_rate", 0, 2**40),
        "BACKFILL_MAX_PARTITIONS_PER_BATCH": ("backfill_max_partitions_per_batch", 1, 100_000),
    }
    for name, (key, low, high) in ints.items():
        if name in env:
            kw[key] = _int(name, env[name], low, high)
    floats = {
        "BACKFILL_MAX_GZIP_RATIO": ("backfill_max_gzip_ratio", 2.0),
        "BACKFILL_DOWNLOAD_DEADLINE_SECONDS": ("backfill_download_deadline", 1.0),
        "BACKFILL_RATE_WINDOW_SECONDS": ("backfill_rate_window", 0.5),
    }
    for name, (key, least) in floats.items():
        if name in env:
            kw[key] = _float(name, env[name], least)
    if "BACKFILL_URL_ALLOW" in env:
        try:
            kw["backfill_url_allow"] = AllowList.parse(env["BACKFILL_URL_ALLOW"])
        except PolicyError as exc:
            raise ConfigError(str(exc)) from None
    if "BACKFILL_TIME_MIN" in env:
        raw = env["BACKFILL_TIME_MIN"]
        try:
            value = datetime.fromisoformat(raw)
        except ValueError:
            raise ConfigError(f"BACKFILL_TIME_MIN must be an ISO 8601 date or time, got {raw!r}") from None
        kw["backfill_time_min"] = value if value.tzinfo else value.replace(tzinfo=UTC)
    if "BACKFILL_TIME_AHEAD" in env:
        try:
            kw["backfill_time_ahead"] = parse_interval(env["BACKFILL_TIME_AHEAD"])
        except IntervalError as exc:
            raise ConfigError(f"BACKFILL_TIME_AHEAD: {exc}") from None
    return kw

"""Configuration: read once, .env honoured (environment wins), bad values stop the start."""

from __future__ import annotations

import os
import subprocess
import sys
from datetime import timedelta

import pytest

from app.config import ConfigError, load_settings
from tests.support.common import ROOT, free_port

BASE = {"DATABASE_URL": "postgresql://u:p@db:5432/market_data"}


def test_defaults_match_the_guide():
    s = load_settings(dict(BASE), dotenv=False)
    assert (s.redis_url, s.registry_url, s.registry_track, s.port) == (
        "redis://redis:6379/0",
        "http://registry:8080",
        "v1",
        8082,
    )
    assert (s.admin_token, s.log_level, s.pulse_enabled, s.event_bus_backend) == ("iamalive", "INFO", True, "inmem")
    assert s.using_default_token
    assert (s.host, s.drift_enabled) == ("0.0.0.0", True)


def test_host_log_format_and_registry_off():
    s = load_settings({**BASE, "HOST": "127.0.0.1", "LOG_FORMAT": "Console", "REGISTRY_URL": "off"}, dotenv=False)
    assert (s.host, s.log_format, s.registry_url, s.drift_enabled) == ("127.0.0.1", "console", "", False)
    assert load_settings({**BASE, "LOG_FORMAT": "json"}, dotenv=False).log_format == "json"


@pytest.mark.parametrize("scheme", ["postgres", "postgresql", "postgresql+psycopg"])
def test_every_postgres_scheme_is_accepted(scheme):
    s = load_settings({"DATABASE_URL": f"{scheme}://u:p@db:5432/md"}, dotenv=False)
    assert s.database_url == "postgresql://u:p@db:5432/md"
    assert s.yoyo_url == "postgresql+psycopg://u:p@db:5432/md"


@pytest.mark.parametrize(
    "env, names",
    [
        ({}, "DATABASE_URL"),
        ({"DATABASE_URL": "mysql://u@h/db"}, "DATABASE_URL"),
        ({"DATABASE_URL": "postgresql://h:notaport/db"}, "DATABASE_URL"),
        ({**BASE, "PORT": "abc"}, "PORT"),
        ({**BASE, "PORT": "70000"}, "PORT"),
        ({**BASE, "EVENT_BUS_BACKEND": "kafka"}, "EVENT_BUS_BACKEND"),
        ({**BASE, "REGISTRY_TRACK": "v3"}, "REGISTRY_TRACK"),
        ({**BASE, "LOG_LEVEL": "LOUD"}, "LOG_LEVEL"),
        ({**BASE, "PULSE_ENABLED": "maybe"}, "PULSE_ENABLED"),
        ({**BASE, "REDIS_URL": "http://redis"}, "REDIS_URL"),
        ({**BASE, "ADMIN_TOKEN": "short"}, "ADMIN_TOKEN"),
        ({**BASE, "RETENTION_SCHEDULE": "every tuesday"}, "RETENTION_SCHEDULE"),
        ({**BASE, "HOST": "local host"}, "HOST"),
        ({**BASE, "LOG_FORMAT": "pretty"}, "LOG_FORMAT"),
        ({**BASE, "REGISTRY_URL": "offline"}, "REGISTRY_URL"),
    ],
)
def test_bad_values_name_the_variable(env, names):
    with pytest.raises(ConfigError) as err:
        load_settings(env, dotenv=False)
    assert names in str(err.value)
    assert "\n" not in str(err.value)


def test_schedules_parse_and_switch_off():
    s = load_settings({**BASE, "RETENTION_SCHEDULE": "12h", "REFRESH_SCHEDULE": "off"}, dotenv=False)
    assert s.retention_every == timedelta(hours=12)
    assert s.refresh_every is None


def test_secrets_are_not_in_the_repr():
    s = load_settings(
        {"DATABASE_URL": "postgresql://u:canary-pw-1@db/md", "ADMIN_TOKEN": "canary-token-1"}, dotenv=False
    )
    assert "canary-token-1" not in repr(s)
    assert set(s.secrets()) == {"canary-token-1", "canary-pw-1"}


def _run(args, env, cwd=ROOT, timeout=30):
    clean = {k: v for k, v in os.environ.items() if k not in ("DATABASE_URL", "PORT", "EVENT_BUS_BACKEND")}
    clean.update(env)
    return subprocess.run(args, cwd=cwd, env=clean, capture_output=True, text=True, timeout=timeout)


@pytest.mark.slow  # starts processes
@pytest.mark.parametrize(
    "command",
    [[sys.executable, "-m", "worker"], [sys.executable, "-m", "gunicorn", "-c", "gunicorn.conf.py"]],
    ids=["worker", "api"],
)
@pytest.mark.parametrize(
    "env, variable",
    [
        ({}, "DATABASE_URL"),
        ({"DATABASE_URL": "postgresql://x@127.0.0.1/db", "PORT": "abc"}, "PORT"),
        ({"DATABASE_URL": "postgresql://x@127.0.0.1/db", "EVENT_BUS_BACKEND": "kafka"}, "EVENT_BUS_BACKEND"),
    ],
    ids=["missing-url", "bad-port", "bad-bus"],
)
def test_processes_refuse_to_start_with_one_clear_line(command, env, variable, tmp_path):
    result = _run(command, env, cwd=ROOT)
    assert result.returncode != 0
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, result.stderr
    assert variable in lines[0]


@pytest.mark.slow  # starts processes
def test_dotenv_is_read_and_the_environment_wins(tmp_path):
    (tmp_path / ".env").write_text("DATABASE_URL=postgresql://from-dotenv@db/md\nPORT=9999\nLOG_LEVEL=DEBUG\n")
    code = (
        f"import sys; sys.path.insert(0, {str(ROOT)!r})\n"
        "from app.config import load_settings\n"
        "s = load_settings(); print(s.database_url, s.port, s.log_level)"
    )
    result = _run([sys.executable, "-c", code], {"PORT": str(free_port()), "LOG_LEVEL": "WARNING"}, cwd=tmp_path)
    url, port, level = result.stdout.split()
    assert url == "postgresql://from-dotenv@db/md"
    assert port != "9999" and level == "WARNING"


def test_backfill_bounds_and_ledger_limits_are_settings():
    from datetime import UTC, datetime, timedelta

    from app.netpolicy import AllowList

    s = load_settings(
        {
            "DATABASE_URL": "postgresql://u@h/db",
            "BACKFILL_MAX_LINE_BYTES": "4096",
            "BACKFILL_MAX_FILE_BYTES": "1000",
            "BACKFILL_MAX_DECOMPRESSED_BYTES": "2000",
            "BACKFILL_MAX_GZIP_RATIO": "50",
            "BACKFILL_MAX_BLANK_LINES": "0",
            "BACKFILL_DOWNLOAD_DEADLINE_SECONDS": "60",
            "BACKFILL_MIN_RATE_BYTES": "10",
            "BACKFILL_RATE_WINDOW_SECONDS": "5",
            "BACKFILL_URL_ALLOW": "vendor.example.com, 10.0.0.0/8",
            "BACKFILL_TIME_MIN": "1950-01-01",
            "BACKFILL_TIME_AHEAD": "1 day",
            "BACKFILL_MAX_PARTITIONS_PER_BATCH": "10",
            "JOB_QUEUE_MAX": "5",
        },
        dotenv=False,
    )
    assert (s.backfill_max_line_bytes, s.backfill_max_file_bytes, s.backfill_max_decompressed_bytes) == (
        4096,
        1000,
        2000,
    )
    assert (s.backfill_max_gzip_ratio, s.backfill_max_blank_lines, s.backfill_min_rate) == (50.0, 0, 10)
    assert (s.backfill_download_deadline, s.backfill_rate_window) == (60.0, 5.0)
    assert s.backfill_url_allow == AllowList.parse("vendor.example.com,10.0.0.0/8")
    assert s.backfill_time_min == datetime(1950, 1, 1, tzinfo=UTC) and s.backfill_time_ahead == timedelta(days=1)
    assert (s.backfill_max_partitions_per_batch, s.job_queue_max) == (10, 5)
    default = load_settings({"DATABASE_URL": "postgresql://u@h/db"}, dotenv=False)
    assert not default.backfill_url_allow  # URL sources off
    assert default.backfill_max_line_bytes == 1 << 20 and default.job_queue_max == 1000
    for name, value in (
        ("BACKFILL_URL_ALLOW", "127.1"),
        ("BACKFILL_URL_ALLOW", "host:0"),
        ("BACKFILL_MAX_LINE_BYTES", "10"),
        ("BACKFILL_TIME_MIN", "yesterday"),
        ("BACKFILL_TIME_AHEAD", "-1 day"),
        ("JOB_QUEUE_MAX", "0"),
    ):
        with pytest.raises(ConfigError, match=name):
            load_settings({"DATABASE_URL": "postgresql://u@h/db", name: value}, dotenv=False)

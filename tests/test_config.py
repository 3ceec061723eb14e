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

"""Structured logging for every process (structlog over the standard library).

`LOG_FORMAT=json` (the default when stderr is not a terminal): one JSON object per line on
stdout, for machines; colour codes that libraries put into their messages (rq does on a
terminal) are removed. `LOG_FORMAT=console` (the default on a terminal): one readable,
coloured line per event, for people. Context bound with `structlog.contextvars`
(request_id, run_id, job) is added to every line, including lines from libraries that log
through the standard library (gunicorn, rq, yoyo). Known secret values are replaced by
'***' in every line before it is written.

RQ's own per-job outcome lines (`Job OK`, the job's result) are dropped: RQ calls a job done when
our runner returned, even for a job the ledger records as cancelled or failed. The
runner's `job finished` line (with run_id and the ledger's status) replaces them.
"""

from __future__ import annotations

import logging
import logging.config
import re
import sys
from typing import Any, NoReturn

import structlog

_secrets: list[str] = []
_ANSI = re.compile(r"\x1b\[[0-9;]*[A-Za-z]")
FORMATS = ("json", "console")


def _strip_ansi(_logger: object, _name: str, event_dict: dict) -> dict:
    """No terminal colour codes inside JSON (rq colours its messages on a terminal)."""
    for key, value in event_dict.items():
        if isinstance(value, str) and "\x1b" in value:
            event_dict[key] = _ANSI.sub("", value)
    return event_dict


_RQ_OUTCOMES = ("Job OK", ": result: ", "result is kept", "Successfully completed")


class _RQJobLines(logging.Filter):
    """Drop rq.worker's job outcome lines: they can contradict the ledger (see module doc)."""

    def filter(self, record: logging.LogRecord) -> bool:
        try:
            message = _ANSI.sub("", record.getMessage())
        except Exception:  # noqa: BLE001 - a malformed record is kept as it is
            return True
        return not any(marker in message for marker in _RQ_OUTCOMES)


def _redact(_logger: object, _name: str, event_dict: dict) -> dict:
    if not _secrets:
        return event_dict
    for key, value in event_dict.items():
        if isinstance(value, str):
            for secret in _secrets:
                if secret in value:
                    value = value.replace(secret, "***")
            event_dict[key] = value
        elif not isinstance(value, (int, float, bool, type(None))):
            text = str(value)
            if any(s in text for s in _secrets):
                for secret in _secrets:
                    text = text.replace(secret, "***")
                event_dict[key] = text
    return event_dict


def _shared_processors() -> list[Any]:
    return [
        structlog.contextvars.merge_contextvars,
        structlog.stdlib.add_log_level,
        structlog.stdlib.add_logger_name,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
        structlog.processors.format_exc_info,
    ]


def _renderer(fmt: str) -> Any:
    if fmt == "console":
        return structlog.dev.ConsoleRenderer(colors=sys.stderr is not None and sys.stderr.isatty())
    return structlog.processors.JSONRenderer()


def logging_dict(level: str = "INFO", fmt: str = "json") -> dict:
    """A `logging.config.dictConfig` that routes all stdlib records through structlog."""
    return {
        "version": 1,
        "disable_existing_loggers": False,
        "filters": {"rq_job_lines": {"()": _RQJobLines}},
        "formatters": {
            "structured": {
                "()": structlog.stdlib.ProcessorFormatter,
                "foreign_pre_chain": _shared_processors(),
                "processors": [
                    structlog.stdlib.ProcessorFormatter.remove_processors_meta,
                    _redact,
                    *([_strip_ansi] if fmt == "json" else []),
                    _renderer(fmt),
                ],
            }
        },
        "handlers": {
            "stdout": {
                "class": "logging.StreamHandler",
                "stream": "ext://sys.stdout",
                "formatter": "structured",
                "filters": ["rq_job_lines"],
            }
        },
        "root": {"handlers": ["stdout"], "level": level},
        "loggers": {
            "gunicorn.error": {"handlers": ["stdout"], "level": level, "propagate": False},
            "gunicorn.access": {"handlers": ["stdout"], "level": "WARNING", "propagate": False},
            "rq.worker": {"level": "WARNING" if level == "INFO" else level},
            "urllib3": {"level": "WARNING"},
        },
    }


def configure(level: str = "INFO", secrets: list[str] | None = None, fmt: str = "json") -> None:
    """Configure structlog and the standard library once per process (`fmt`: json | console)."""
    _secrets[:] = sorted(set(secrets or []), key=len, reverse=True)
    logging.config.dictConfig(logging_dict(level, fmt))
    structlog.configure(
        processors=_shared_processors()[:1]
        + [structlog.stdlib.filter_by_level]
        + _shared_processors()[1:]
        + [structlog.stdlib.ProcessorFormatter.wrap_for_formatter],
        logger_factory=structlog.stdlib.LoggerFactory(),
        wrapper_class=structlog.stdlib.BoundLogger,
        cache_logger_on_first_use=True,
    )


def fatal(message: str) -> NoReturn:
    """Print one line on stderr and exit non-zero (configuration errors at start)."""
    sys.stderr.write(f"market-data-store: {message}\n")
    sys.stderr.flush()
    raise SystemExit(2)


def get(name: str = "store") -> Any:
    return structlog.get_logger(name)

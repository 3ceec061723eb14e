"""Structured JSON logging for every process (structlog over the standard library).

One JSON object per line on stdout. Context bound with `structlog.contextvars`
(request_id, run_id, job) is added to every line, including lines from libraries
that log through the standard library (gunicorn, rq, yoyo). Known secret values are
replaced by '***' in every line before it is written.
"""

from __future__ import annotations

import logging
import logging.config
import sys
from typing import Any, NoReturn

import structlog

_secrets: list[str] = []


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


def logging_dict(level: str = "INFO") -> dict:
    """A `logging.config.dictConfig` that routes all stdlib records through structlog."""
    return {
        "version": 1,
        "disable_existing_loggers": False,
        "formatters": {
            "json": {
                "()": structlog.stdlib.ProcessorFormatter,
                "foreign_pre_chain": _shared_processors(),
                "processors": [
                    structlog.stdlib.ProcessorFormatter.remove_processors_meta,
                    _redact,
                    structlog.processors.JSONRenderer(),
                ],
            }
        },
        "handlers": {"stdout": {"class": "logging.StreamHandler", "stream": "ext://sys.stdout", "formatter": "json"}},
        "root": {"handlers": ["stdout"], "level": level},
        "loggers": {
            "gunicorn.error": {"handlers": ["stdout"], "level": level, "propagate": False},
            "gunicorn.access": {"handlers": ["stdout"], "level": "WARNING", "propagate": False},
            "rq.worker": {"level": "WARNING" if level == "INFO" else level},
            "urllib3": {"level": "WARNING"},
        },
    }


def configure(level: str = "INFO", secrets: list[str] | None = None) -> None:
    """Configure structlog and the standard library once per process."""
    _secrets[:] = sorted(set(secrets or []), key=len, reverse=True)
    logging.config.dictConfig(logging_dict(level))
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

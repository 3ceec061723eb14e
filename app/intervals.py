"""Strict parsing of human intervals: '30 days', '1d', '12h', '90 minutes', 'PT1H'."""

from __future__ import annotations

import re
from datetime import timedelta

_UNITS = {
    "s": 1,
    "sec": 1,
    "secs": 1,
    "second": 1,
    "seconds": 1,
    "m": 60,
    "min": 60,
    "mins": 60,
    "minute": 60,
    "minutes": 60,
    "h": 3600,
    "hr": 3600,
    "hrs": 3600,
    "hour": 3600,
    "hours": 3600,
    "d": 86400,
    "day": 86400,
    "days": 86400,
    "w": 604800,
    "week": 604800,
    "weeks": 604800,
}
UNIT_SECONDS: dict[str, int] = _UNITS  # shared with the bar-interval vocabulary
_PART = re.compile(r"(\d{1,9})\s*([a-z]+)")
_ISO = re.compile(r"^P(?:(\d{1,9})W)?(?:(\d{1,9})D)?(?:T(?:(\d{1,9})H)?(?:(\d{1,9})M)?(?:(\d{1,9})S)?)?$")
_MAX = timedelta(days=365 * 100)


class IntervalError(ValueError):
    """The text is not an interval this service understands."""


def parse_interval(text: object) -> timedelta:
    """Parse `text` into a positive timedelta or raise IntervalError saying why."""
    if not isinstance(text, str):
        raise IntervalError("interval must be a string such as '30 days' or '12h'")
    raw = text.strip()
    if not raw:
        raise IntervalError("interval is empty")
    if raw.startswith("-"):
        raise IntervalError(f"interval must be positive, got {text!r}")
    iso = _ISO.match(raw.upper())
    if iso and any(iso.groups()):
        w, d, h, m, s = (int(g or 0) for g in iso.groups())
        seconds = w * 604800 + d * 86400 + h * 3600 + m * 60 + s
    else:
        low = raw.lower()
        pos, seconds = 0, 0
        for match in _PART.finditer(low):
            if low[pos : match.start()].strip(" ,") or match.group(2) not in _UNITS:
                raise IntervalError(f"not an interval: {text!r} (try '30 days' or '12h')")
            seconds += int(match.group(1)) * _UNITS[match.group(2)]
            pos = match.end()
        if pos == 0 or low[pos:].strip():
            raise IntervalError(f"not an interval: {text!r} (try '30 days' or '12h')")
    if seconds <= 0:
        raise IntervalError(f"interval must be positive, got {text!r}")
    if seconds > _MAX.total_seconds():  # before timedelta(), which overflows past ~2.7 million years
        raise IntervalError(f"interval is too long: {text!r}")
    return timedelta(seconds=seconds)


def in_words(value: timedelta) -> str:
    """A retention period as people say it: '5 years' for 1825 days, else format_interval."""
    days, rest = divmod(int(value.total_seconds()), 86400)
    if rest == 0 and days and days % 365 == 0:
        n = days // 365
        return f"{n} year{'s' if n != 1 else ''}"
    return format_interval(value)


def format_interval(value: timedelta) -> str:
    """Render a timedelta the way the API reports intervals ('30 days', '12 hours')."""
    seconds = int(value.total_seconds())
    for unit, size in (("day", 86400), ("hour", 3600), ("minute", 60)):
        if seconds % size == 0:
            n = seconds // size
            return f"{n} {unit}{'s' if n != 1 else ''}"
    return f"{seconds} seconds"

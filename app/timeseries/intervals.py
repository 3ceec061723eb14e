"""The closed vocabulary of bar intervals, and the spellings the backfill accepts for them.

Canonical names: a count and a unit, lower case, the unit one of `s` (second), `m`
(minute), `h` (hour), `d` (day), `w` (week), `mo` (month). One name per duration: a
spelling is read as its duration and stored as the canonical name of that duration, so
`1D`, `1day`, `24h` and `1440m` are all `1d`, `60m` is `1h`, `7d` is `1w`. A duration
outside the set (`7m`, `2d`) is rejected with the list of allowed values.

Case matters only for `M`: `1M` is a month (as most vendors write it), `1m` a minute.
Words are read in any case: `1min`, `1Min`, `1 minute`, `1hour`, `1month`, `1mon`.

The same set is enforced by the database (CHECK on bars_ohlcv."interval", migration
0021_bar_intervals); keep the two equal (tests/test_bar_intervals.py checks).
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from datetime import timedelta

from app.intervals import UNIT_SECONDS

# name -> seconds (a month counts as 30 days: only used to order and compare).
CANONICAL: dict[str, int] = {
    "1s": 1,
    "5s": 5,
    "10s": 10,
    "15s": 15,
    "30s": 30,
    "1m": 60,
    "2m": 120,
    "3m": 180,
    "5m": 300,
    "10m": 600,
    "15m": 900,
    "30m": 1800,
    "1h": 3600,
    "2h": 7200,
    "4h": 14400,
    "6h": 21600,
    "12h": 43200,
    "1d": 86400,
    "1w": 604800,
    "1mo": 2592000,
}
ALLOWED: tuple[str, ...] = tuple(CANONICAL)
_BY_SECONDS = {seconds: name for name, seconds in CANONICAL.items()}
_MONTH = 2592000
# The duration units of app.intervals plus the bar-only ones (T: minute, as pandas writes it).
_UNITS = {**UNIT_SECONDS, "t": 60, "wk": 604800, "mo": _MONTH, "mon": _MONTH, "month": _MONTH, "months": _MONTH}
_SPELLING = re.compile(r"^(\d{1,6})\s*([A-Za-z]{1,7})$")


class UnknownInterval(ValueError):
    """Not a spelling of any interval in the vocabulary."""


def normalise(text: str) -> str:
    """The canonical name of `text`, or UnknownInterval naming the allowed values."""
    if text in CANONICAL:
        return text
    match = _SPELLING.match(text.strip())
    if match:
        count, unit = int(match.group(1)), match.group(2)
        size = _MONTH if unit == "M" else _UNITS.get(unit.lower())
        if size is not None and count > 0:
            name = _BY_SECONDS.get(count * size)
            if name is not None and (size == _MONTH) == (name == "1mo"):  # 30d is not a month
                return name
    raise UnknownInterval(f"interval {text[:20]!r} is not one of {' '.join(ALLOWED)} (or a spelling of one)")


def finer_than(seconds: int) -> tuple[str, ...]:
    """The intervals strictly finer than `seconds` (the source intervals of a rollup of that width)."""
    return tuple(name for name, size in CANONICAL.items() if size < seconds)


def finest(names: Iterable[str]) -> timedelta | None:
    """The finest of these intervals as a duration; None if there is none or one is unknown
    (what the partitions a backfill batch makes are sized to: app.timeseries.partitions.plan)."""
    sizes = [CANONICAL.get(name) for name in names]
    if not sizes or None in sizes:
        return None
    return timedelta(seconds=min(s for s in sizes if s is not None))

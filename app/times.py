"""Times as the store handles them: aware UTC, the range it accepts, ISO 8601 text."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
# Times the store accepts from callers and makes partitions for: [EARLIEST, LATEST).
EARLIEST = datetime(1000, 1, 1, tzinfo=UTC)
LATEST = datetime(9000, 1, 1, tzinfo=UTC)


def utc(ts: datetime) -> datetime:
    """Aware UTC datetime; a naive one is taken as UTC."""
    return ts.replace(tzinfo=UTC) if ts.tzinfo is None else ts.astimezone(UTC)


def iso(ts: datetime | None) -> str | None:
    """ISO 8601 in UTC, as every document of the API shows times; None stays None."""
    return utc(ts).isoformat() if ts is not None else None


def in_range(ts: datetime) -> bool:
    """Whether an aware `ts` lies in [EARLIEST, LATEST)."""
    return EARLIEST <= ts < LATEST


def align(ts: datetime, width: timedelta) -> datetime:
    """Start of the epoch-aligned slot of `width` that contains `ts`."""
    return EPOCH + ((utc(ts) - EPOCH) // width) * width

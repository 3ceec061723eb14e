"""What the platform expects of the store's time-series tables (docs/contracts.md), written
out here rather than read from `app.timeseries.catalog`: a test comparing the database with
these fails if the catalogue drifts from the contract."""

from __future__ import annotations

from datetime import timedelta

TIME_COLUMNS = {
    "bars": "ts",
    "fundamentals": "asof",
    "news": "published_at",
    "options_snap": "ts",
    "bars_ohlcv": "ts",
    "signals": "ts",
    "tick_data": "ts",
}
CHUNKS = {
    "bars": timedelta(days=7),
    "fundamentals": timedelta(days=90),
    "news": timedelta(days=30),
    "options_snap": timedelta(days=7),
    "bars_ohlcv": timedelta(days=7),
    "signals": timedelta(days=7),
    "tick_data": timedelta(days=1),
}

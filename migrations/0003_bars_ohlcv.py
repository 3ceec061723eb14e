"""Market data 1/4: time-series backend, the updated_at trigger function, bars_ohlcv.

The backend is chosen here, once: TimescaleDB when the extension is installed or can
be (available and preloaded), else plain Postgres range partitioning managed by the
store (app/timeseries/partitions.py). Idempotent: a re-run changes nothing.
"""

import sys
from pathlib import Path

_ROOT = str(Path(__file__).resolve().parent.parent)
if _ROOT not in sys.path:
    sys.path.insert(0, _ROOT)

from yoyo import step  # noqa: E402

from app.timeseries import backend, storage  # noqa: E402

__depends__ = {"0002_job_runs"}

TOUCH_UPDATED_AT = """
CREATE OR REPLACE FUNCTION store_touch_updated_at() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    NEW.updated_at := now();
    RETURN NEW;
END $$
"""

BARS_OHLCV = """
    provider   text NOT NULL,
    symbol     text NOT NULL CONSTRAINT bars_ohlcv_symbol_upper CHECK (symbol = upper(symbol)),
    "interval" text NOT NULL,
    ts         timestamptz NOT NULL,
    open       double precision,
    high       double precision,
    low        double precision,
    close      double precision,
    volume     double precision,
    created_at timestamptz NOT NULL DEFAULT now(),
    updated_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (provider, symbol, "interval", ts)
"""


def apply(conn):
    use = backend.enable_timescaledb(conn)
    conn.execute(TOUCH_UPDATED_AT)
    storage.create_table(conn, "bars_ohlcv", BARS_OHLCV, use)
    storage.add_updated_at_trigger(conn, "bars_ohlcv")


def rollback(conn):
    conn.execute("DROP TABLE IF EXISTS bars_ohlcv CASCADE")
    conn.execute("DROP FUNCTION IF EXISTS store_touch_updated_at() CASCADE")


steps = [step(apply, rollback)]

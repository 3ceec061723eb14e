"""Market data 4/4: tenants and the remaining time-series tables (CONTRACTS.md §5).

bars, fundamentals, news and options_snap are tenant-scoped (row-level security in
0007); signals is provider-based like bars_ohlcv. Symbols are stored upper-case
(CHECK), every table has created_at / updated_at with an update trigger, all times are
timestamptz (UTC). Time-series storage as in 0003.
"""

import sys
from pathlib import Path

_ROOT = str(Path(__file__).resolve().parent.parent)
if _ROOT not in sys.path:
    sys.path.insert(0, _ROOT)

from yoyo import step  # noqa: E402

from app.timeseries import backend, storage  # noqa: E402

__depends__ = {"0005_aggregates"}

TENANTS = """
CREATE TABLE IF NOT EXISTS tenants (
    id         uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    tenant_id  varchar(50) NOT NULL UNIQUE,
    name       text,
    created_at timestamptz NOT NULL DEFAULT now(),
    updated_at timestamptz NOT NULL DEFAULT now()
)
"""

STAMPS = """
    created_at timestamptz NOT NULL DEFAULT now(),
    updated_at timestamptz NOT NULL DEFAULT now()"""

TABLES = {
    "bars": """
    ts          timestamptz NOT NULL,
    tenant_id   varchar(50) NOT NULL,
    vendor      text NOT NULL,
    symbol      text NOT NULL CONSTRAINT bars_symbol_upper CHECK (symbol = upper(symbol)),
    timeframe   text NOT NULL,
    open_price  numeric(20,8),
    high_price  numeric(20,8),
    low_price   numeric(20,8),
    close_price numeric(20,8),
    volume      bigint,"""
    + STAMPS
    + """,
    PRIMARY KEY (ts, tenant_id, vendor, symbol, timeframe)""",
    "fundamentals": """
    asof              timestamptz NOT NULL,
    tenant_id         varchar(50) NOT NULL,
    vendor            text NOT NULL,
    symbol            text NOT NULL CONSTRAINT fundamentals_symbol_upper CHECK (symbol = upper(symbol)),
    total_assets      numeric(25,2),
    total_liabilities numeric(25,2),
    net_income        numeric(25,2),
    eps               numeric(10,4),"""
    + STAMPS
    + """,
    PRIMARY KEY (asof, tenant_id, vendor, symbol)""",
    "news": """
    published_at    timestamptz NOT NULL,
    tenant_id       varchar(50) NOT NULL,
    vendor          text NOT NULL,
    id              text NOT NULL,
    title           text,
    url             text,
    symbol          text CONSTRAINT news_symbol_upper CHECK (symbol = upper(symbol)),
    sentiment_score numeric(5,4),"""
    + STAMPS
    + """,
    PRIMARY KEY (published_at, tenant_id, vendor, id)""",
    "options_snap": """
    ts          timestamptz NOT NULL,
    tenant_id   varchar(50) NOT NULL,
    vendor      text NOT NULL,
    symbol      text NOT NULL CONSTRAINT options_snap_symbol_upper CHECK (symbol = upper(symbol)),
    expiry      date NOT NULL,
    option_type char(1) NOT NULL CONSTRAINT options_snap_option_type CHECK (option_type IN ('C', 'P')),
    strike      numeric(20,8) NOT NULL,
    iv          double precision,
    delta       double precision,
    gamma       double precision,
    oi          bigint,
    volume      bigint,
    spot        numeric(20,8),"""
    + STAMPS
    + """,
    PRIMARY KEY (ts, tenant_id, vendor, symbol, expiry, option_type, strike)""",
    "signals": """
    provider   text NOT NULL,
    symbol     text NOT NULL CONSTRAINT signals_symbol_upper CHECK (symbol = upper(symbol)),
    ts         timestamptz NOT NULL,
    name       text NOT NULL,
    value      double precision NOT NULL,
    score      double precision,
    metadata   jsonb NOT NULL DEFAULT '{}'::jsonb,"""
    + STAMPS
    + """,
    PRIMARY KEY (provider, symbol, ts, name)""",
}


def apply(conn):
    use = backend.enable_timescaledb(conn)
    conn.execute(TENANTS)
    storage.add_updated_at_trigger(conn, "tenants")
    for name, columns in TABLES.items():
        storage.create_table(conn, name, columns, use)
        storage.add_updated_at_trigger(conn, name)


def rollback(conn):
    for name in reversed(list(TABLES)):
        conn.execute(f"DROP TABLE IF EXISTS {name} CASCADE")
    conn.execute("DROP TABLE IF EXISTS tenants CASCADE")


steps = [step(apply, rollback)]

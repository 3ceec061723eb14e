"""Market data 2/4: retention policies, one row per time-series table.

Seeded with the catalog's documented defaults (app/timeseries/catalog.py,
docs/retention.md); an existing row is never overwritten. `last_cutoff` is the
retention watermark: rollup buckets that begin before it are the long-term record and
are never recomputed from the (partly dropped) source.
"""

import sys
from pathlib import Path

_ROOT = str(Path(__file__).resolve().parent.parent)
if _ROOT not in sys.path:
    sys.path.insert(0, _ROOT)

from yoyo import step  # noqa: E402

from app.timeseries import catalog  # noqa: E402

__depends__ = {"0003_bars_ohlcv"}

TABLE = """
CREATE TABLE IF NOT EXISTS store_retention_policies (
    table_name      text PRIMARY KEY,
    retain          interval NOT NULL CHECK (retain >= interval '1 hour'),
    enabled         boolean NOT NULL DEFAULT true,
    updated_at      timestamptz NOT NULL DEFAULT now(),
    last_applied_at timestamptz,
    last_cutoff     timestamptz,
    last_result     jsonb
)
"""


def apply(conn):
    conn.execute(TABLE)
    for t in catalog.TABLES.values():
        conn.execute(
            "INSERT INTO store_retention_policies (table_name, retain) VALUES (%s, %s) ON CONFLICT DO NOTHING",
            (t.name, t.default_retain),
        )


def rollback(conn):
    conn.execute("DROP TABLE IF EXISTS store_retention_policies")


steps = [step(apply, rollback)]

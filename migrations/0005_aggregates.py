"""Market data 3/4: continuous aggregates bars_ohlcv_1h and bars_ohlcv_1d.

TimescaleDB: real continuous aggregates (materialized only, created WITH NO DATA; the
refresh job fills them). Plain Postgres: rollup tables of the same shape, plus the
statement-level triggers that record which buckets each change to bars_ohlcv touched
(app/timeseries/rollups.py). On a database that already holds bars, every existing
bucket starts out invalidated, so the first refresh builds the rollups.
"""

import sys
from pathlib import Path

_ROOT = str(Path(__file__).resolve().parent.parent)
if _ROOT not in sys.path:
    sys.path.insert(0, _ROOT)

from psycopg import sql  # noqa: E402
from yoyo import step  # noqa: E402

from app.timeseries import backend, catalog  # noqa: E402

__depends__ = {"0004_retention_policies"}

REGISTRY = """
CREATE TABLE IF NOT EXISTS store_aggregates (
    name            text PRIMARY KEY,
    source          text NOT NULL,
    bucket_width    interval NOT NULL,
    last_refresh_at timestamptz,
    watermark       timestamptz,
    last_result     jsonb
)
"""

CAGG = """
CREATE MATERIALIZED VIEW IF NOT EXISTS {name}
WITH (timescaledb.continuous, timescaledb.materialized_only = true) AS
SELECT provider, symbol, "interval", time_bucket({width}::interval, ts) AS bucket,
       first(open, ts) AS open, max(high) AS high, min(low) AS low, last(close, ts) AS close,
       sum(volume) AS volume
FROM {source}
GROUP BY provider, symbol, "interval", bucket
WITH NO DATA
"""

ROLLUP = """
CREATE TABLE IF NOT EXISTS {name} (
    provider   text NOT NULL,
    symbol     text NOT NULL,
    "interval" text NOT NULL,
    bucket     timestamptz NOT NULL,
    open       double precision,
    high       double precision,
    low        double precision,
    close      double precision,
    volume     double precision,
    PRIMARY KEY (provider, symbol, "interval", bucket)
)
"""

INVALIDATIONS = """
CREATE TABLE IF NOT EXISTS store_rollup_invalidations (
    aggregate text NOT NULL,
    bucket    timestamptz NOT NULL
);
CREATE INDEX IF NOT EXISTS store_rollup_invalidations_agg_bucket ON store_rollup_invalidations (aggregate, bucket);

-- Statement-level: one pass over the statement's transition table(s) per statement,
-- appending (no unique key, so concurrent writers never wait on each other).
CREATE OR REPLACE FUNCTION store_rollup_invalidate() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP IN ('INSERT', 'UPDATE') THEN
        INSERT INTO store_rollup_invalidations (aggregate, bucket)
        SELECT DISTINCT a.name, date_bin(a.bucket_width, n.ts, timestamptz '1970-01-01 00:00:00+00')
        FROM new_rows n CROSS JOIN store_aggregates a
        WHERE a.source = TG_TABLE_NAME AND isfinite(n.ts);
    END IF;
    IF TG_OP IN ('UPDATE', 'DELETE') THEN
        INSERT INTO store_rollup_invalidations (aggregate, bucket)
        SELECT DISTINCT a.name, date_bin(a.bucket_width, o.ts, timestamptz '1970-01-01 00:00:00+00')
        FROM old_rows o CROSS JOIN store_aggregates a
        WHERE a.source = TG_TABLE_NAME AND isfinite(o.ts);
    END IF;
    RETURN NULL;
END $$;
"""

TRIGGERS = {
    "ins": "AFTER INSERT ON {src} REFERENCING NEW TABLE AS new_rows",
    "upd": "AFTER UPDATE ON {src} REFERENCING OLD TABLE AS old_rows NEW TABLE AS new_rows",
    "del": "AFTER DELETE ON {src} REFERENCING OLD TABLE AS old_rows",
}


def apply(conn):
    conn.execute(REGISTRY)
    for agg in catalog.AGGREGATES.values():
        conn.execute(
            "INSERT INTO store_aggregates (name, source, bucket_width) VALUES (%s, %s, %s) ON CONFLICT DO NOTHING",
            (agg.name, agg.source, agg.bucket),
        )
    sources = sorted({a.source for a in catalog.AGGREGATES.values()})
    for source in sources:
        src = sql.Identifier(source)
        if backend.is_hypertable(conn, source):
            for agg in (a for a in catalog.AGGREGATES.values() if a.source == source):
                conn.execute(
                    sql.SQL(CAGG).format(name=sql.Identifier(agg.name), width=sql.Literal(agg.bucket), source=src)
                )
            continue
        for agg in (a for a in catalog.AGGREGATES.values() if a.source == source):
            conn.execute(sql.SQL(ROLLUP).format(name=sql.Identifier(agg.name)))
            conn.execute(
                sql.SQL("CREATE INDEX IF NOT EXISTS {} ON {} (bucket)").format(
                    sql.Identifier(agg.name + "_bucket_idx"), sql.Identifier(agg.name)
                )
            )
        conn.execute(INVALIDATIONS)
        for suffix, clause in TRIGGERS.items():
            name = sql.Identifier(f"{source}_rollup_{suffix}")
            conn.execute(sql.SQL("DROP TRIGGER IF EXISTS {} ON {}").format(name, src))
            conn.execute(
                sql.SQL(
                    "CREATE TRIGGER {} " + clause + " FOR EACH STATEMENT EXECUTE FUNCTION store_rollup_invalidate()"
                ).format(name, src=src)
            )
        conn.execute(
            sql.SQL("""INSERT INTO store_rollup_invalidations (aggregate, bucket)
                       SELECT DISTINCT a.name, date_bin(a.bucket_width, s.ts, timestamptz '1970-01-01 00:00:00+00')
                       FROM {} s CROSS JOIN store_aggregates a
                       WHERE a.source = %s AND isfinite(s.ts)
                         AND NOT EXISTS (SELECT 1 FROM store_rollup_invalidations)""").format(src),
            (source,),
        )


def rollback(conn):
    for agg in catalog.AGGREGATES.values():
        kind = conn.execute("SELECT relkind FROM pg_class WHERE oid = to_regclass(%s)", (agg.name,)).fetchone()
        if kind and kind[0] == "v":
            conn.execute(sql.SQL("DROP MATERIALIZED VIEW IF EXISTS {} CASCADE").format(sql.Identifier(agg.name)))
        elif kind:
            conn.execute(sql.SQL("DROP TABLE IF EXISTS {} CASCADE").format(sql.Identifier(agg.name)))
    conn.execute("DROP FUNCTION IF EXISTS store_rollup_invalidate() CASCADE")
    conn.execute("DROP TABLE IF EXISTS store_rollup_invalidations, store_aggregates")


steps = [step(apply, rollback)]

-- depends: 0004_retention_policies
-- Market data 3/4: the aggregates bars_ohlcv_1h (1-hour buckets) and bars_ohlcv_1d (1-day).
--
-- Frozen history (see 0003). TimescaleDB (bars_ohlcv is a hypertable): real continuous
-- aggregates, materialized only, created WITH NO DATA (the refresh job fills them).
-- Plain Postgres: rollup tables of the same shape, plus the statement-level triggers
-- that record which buckets each change to bars_ohlcv touched (app/timeseries/rollups.py).
-- On a database that already holds bars, every existing bucket starts out invalidated,
-- so the first refresh builds the rollups.

CREATE TABLE IF NOT EXISTS store_aggregates (
    name            text PRIMARY KEY,
    source          text NOT NULL,
    bucket_width    interval NOT NULL,
    last_refresh_at timestamptz,
    watermark       timestamptz,
    last_result     jsonb
);

INSERT INTO store_aggregates (name, source, bucket_width) VALUES
    ('bars_ohlcv_1h', 'bars_ohlcv', interval '1 hour'),
    ('bars_ohlcv_1d', 'bars_ohlcv', interval '1 day')
ON CONFLICT DO NOTHING;

DO $migration$
DECLARE
    agg record;
    hypertable boolean := false;
BEGIN
    IF EXISTS (SELECT 1 FROM pg_extension WHERE extname = 'timescaledb') THEN
        hypertable := EXISTS (SELECT 1 FROM timescaledb_information.hypertables
                              WHERE hypertable_schema = current_schema() AND hypertable_name = 'bars_ohlcv');
    END IF;
    FOR agg IN
        SELECT * FROM (VALUES ('bars_ohlcv_1h', interval '1 hour'), ('bars_ohlcv_1d', interval '1 day'))
            AS v (name, width)
    LOOP
        IF hypertable THEN
            EXECUTE format($sql$
                CREATE MATERIALIZED VIEW IF NOT EXISTS %I
                WITH (timescaledb.continuous, timescaledb.materialized_only = true) AS
                SELECT provider, symbol, "interval", time_bucket(%L::interval, ts) AS bucket,
                       first(open, ts) AS open, max(high) AS high, min(low) AS low, last(close, ts) AS close,
                       sum(volume) AS volume
                FROM bars_ohlcv
                GROUP BY provider, symbol, "interval", bucket
                WITH NO DATA $sql$, agg.name, agg.width);
        ELSE
            EXECUTE format($sql$
                CREATE TABLE IF NOT EXISTS %I (
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
                ) $sql$, agg.name);
            EXECUTE format('CREATE INDEX IF NOT EXISTS %I ON %I (bucket)', agg.name || '_bucket_idx', agg.name);
        END IF;
    END LOOP;
    IF hypertable THEN
        RETURN;
    END IF;

    CREATE TABLE IF NOT EXISTS store_rollup_invalidations (
        aggregate text NOT NULL,
        bucket    timestamptz NOT NULL
    );
    CREATE INDEX IF NOT EXISTS store_rollup_invalidations_agg_bucket ON store_rollup_invalidations (aggregate, bucket);

    -- Statement-level: one pass over the statement's transition table(s) per statement,
    -- appending (no unique key, so concurrent writers never wait on each other).
    -- (The body's text is kept exactly as first written: it is part of the schema.)
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

    DROP TRIGGER IF EXISTS bars_ohlcv_rollup_ins ON bars_ohlcv;
    CREATE TRIGGER bars_ohlcv_rollup_ins AFTER INSERT ON bars_ohlcv REFERENCING NEW TABLE AS new_rows
        FOR EACH STATEMENT EXECUTE FUNCTION store_rollup_invalidate();
    DROP TRIGGER IF EXISTS bars_ohlcv_rollup_upd ON bars_ohlcv;
    CREATE TRIGGER bars_ohlcv_rollup_upd AFTER UPDATE ON bars_ohlcv REFERENCING OLD TABLE AS old_rows NEW TABLE AS new_rows
        FOR EACH STATEMENT EXECUTE FUNCTION store_rollup_invalidate();
    DROP TRIGGER IF EXISTS bars_ohlcv_rollup_del ON bars_ohlcv;
    CREATE TRIGGER bars_ohlcv_rollup_del AFTER DELETE ON bars_ohlcv REFERENCING OLD TABLE AS old_rows
        FOR EACH STATEMENT EXECUTE FUNCTION store_rollup_invalidate();

    -- Bars written before this migration: every bucket they touch starts out invalidated.
    INSERT INTO store_rollup_invalidations (aggregate, bucket)
    SELECT DISTINCT a.name, date_bin(a.bucket_width, s.ts, timestamptz '1970-01-01 00:00:00+00')
    FROM bars_ohlcv s CROSS JOIN store_aggregates a
    WHERE a.source = 'bars_ohlcv' AND isfinite(s.ts)
      AND NOT EXISTS (SELECT 1 FROM store_rollup_invalidations);
END
$migration$;

-- depends: 0013_tick_data
-- The six tick rollups the platform reads, keyed by provider, symbol and their bucket.
-- Frozen history: literal SQL only. Idempotent.
--
--   tick_agg_1m, tick_agg_5m, tick_agg_1h (bucket): open/high/low/close of price by ts,
--       volume = sum(size), vwap = sum(price*size)/sum(size) (NULL without sizes), tick_count
--   tick_vwap_daily (day): vwap, volume, tick_count
--   tick_spread_stats (bucket, 5 min): avg/min/max of ask - bid and the average spread in
--       basis points of the mid, over ticks carrying both bid and ask
--   tick_rate_stats (bucket, 1 min): ticks_per_minute
--
-- TimescaleDB (tick_data is a hypertable): continuous aggregates on tick_data (materialized
-- only, created empty) with refresh policies: every minute for the 1-minute ones, 5 minutes,
-- 1 hour and 1 day for the others; each policy reaches back a few buckets only, so buckets
-- older than that (and those retention froze) are left to the store's refresh job.
-- Plain Postgres: rollup tables of the same shape maintained by the store
-- (app/timeseries/rollups.py); tick_data's statement triggers log the minutes each
-- statement touched in store_rollup_source_log (one row per statement and minute: the
-- pipeline writes one tick per statement), which a refresh turns into invalidations.

INSERT INTO store_aggregates (name, source, bucket_width) VALUES
    ('tick_agg_1m', 'tick_data', interval '1 minute'),
    ('tick_agg_5m', 'tick_data', interval '5 minutes'),
    ('tick_agg_1h', 'tick_data', interval '1 hour'),
    ('tick_vwap_daily', 'tick_data', interval '1 day'),
    ('tick_spread_stats', 'tick_data', interval '5 minutes'),
    ('tick_rate_stats', 'tick_data', interval '1 minute')
ON CONFLICT DO NOTHING;

-- Statement-level (one pass over the statement's transition tables): appends one row per
-- finest bucket (the smallest bucket_width of the source's aggregates) the statement touched.
-- Plain appends, no unique key: concurrent writers never wait on each other.
-- SECURITY DEFINER: the pipeline's role writes tick_data but has no rights on the store's
-- bookkeeping tables; the trigger writes them as the store (the function's owner).
CREATE OR REPLACE FUNCTION store_rollup_log() RETURNS trigger
LANGUAGE plpgsql SECURITY DEFINER SET search_path FROM CURRENT AS $$
DECLARE
    w interval := (SELECT min(bucket_width) FROM store_aggregates WHERE source = TG_TABLE_NAME);
BEGIN
    IF w IS NULL THEN
        RETURN NULL;
    END IF;
    IF TG_OP IN ('INSERT', 'UPDATE') THEN
        INSERT INTO store_rollup_source_log (source, lo, hi)
        SELECT TG_TABLE_NAME, b, b + w
        FROM (SELECT DISTINCT date_bin(w, n.ts, timestamptz '1970-01-01 00:00:00+00') AS b FROM new_rows n
              WHERE n.ts >= timestamptz '1000-01-01 00:00:00+00' AND n.ts < timestamptz '9000-01-01 00:00:00+00') x;
    END IF;
    IF TG_OP IN ('UPDATE', 'DELETE') THEN
        INSERT INTO store_rollup_source_log (source, lo, hi)
        SELECT TG_TABLE_NAME, b, b + w
        FROM (SELECT DISTINCT date_bin(w, o.ts, timestamptz '1970-01-01 00:00:00+00') AS b FROM old_rows o
              WHERE o.ts >= timestamptz '1000-01-01 00:00:00+00' AND o.ts < timestamptz '9000-01-01 00:00:00+00') x;
    END IF;
    RETURN NULL;
END $$;

-- The same for bars_ohlcv's invalidation trigger (0005), where it exists (plain Postgres).
DO $$
BEGIN
    IF to_regprocedure('store_rollup_invalidate()') IS NOT NULL THEN
        ALTER FUNCTION store_rollup_invalidate() SECURITY DEFINER;
        ALTER FUNCTION store_rollup_invalidate() SET search_path FROM CURRENT;
    END IF;
END $$;

DO $$
DECLARE
    plain boolean := (SELECT relkind = 'p' FROM pg_class WHERE oid = to_regclass('tick_data'));
    ohlc text;
BEGIN
    IF NOT plain THEN
        ohlc := 'first(price, ts) AS open, max(price) AS high, min(price) AS low, last(price, ts) AS close, '
                'sum(size) AS volume, sum(price * size) / nullif(sum(size), 0) AS vwap, count(*) AS tick_count';
        EXECUTE 'CREATE MATERIALIZED VIEW IF NOT EXISTS tick_agg_1m '
             || 'WITH (timescaledb.continuous, timescaledb.materialized_only = true) AS '
             || 'SELECT provider, symbol, time_bucket(interval ''1 minute'', ts) AS bucket, ' || ohlc
             || ' FROM tick_data GROUP BY provider, symbol, bucket WITH NO DATA';
        EXECUTE 'CREATE MATERIALIZED VIEW IF NOT EXISTS tick_agg_5m '
             || 'WITH (timescaledb.continuous, timescaledb.materialized_only = true) AS '
             || 'SELECT provider, symbol, time_bucket(interval ''5 minutes'', ts) AS bucket, ' || ohlc
             || ' FROM tick_data GROUP BY provider, symbol, bucket WITH NO DATA';
        EXECUTE 'CREATE MATERIALIZED VIEW IF NOT EXISTS tick_agg_1h '
             || 'WITH (timescaledb.continuous, timescaledb.materialized_only = true) AS '
             || 'SELECT provider, symbol, time_bucket(interval ''1 hour'', ts) AS bucket, ' || ohlc
             || ' FROM tick_data GROUP BY provider, symbol, bucket WITH NO DATA';
        CREATE MATERIALIZED VIEW IF NOT EXISTS tick_vwap_daily
        WITH (timescaledb.continuous, timescaledb.materialized_only = true) AS
        SELECT provider, symbol, time_bucket(interval '1 day', ts) AS day,
               sum(price * size) / nullif(sum(size), 0) AS vwap, sum(size) AS volume, count(*) AS tick_count
        FROM tick_data GROUP BY provider, symbol, day WITH NO DATA;
        CREATE MATERIALIZED VIEW IF NOT EXISTS tick_spread_stats
        WITH (timescaledb.continuous, timescaledb.materialized_only = true) AS
        SELECT provider, symbol, time_bucket(interval '5 minutes', ts) AS bucket,
               avg(ask - bid) AS avg_spread, min(ask - bid) AS min_spread, max(ask - bid) AS max_spread,
               avg((ask - bid) / nullif((ask + bid) / 2, 0) * 10000) AS avg_spread_bps
        FROM tick_data WHERE bid IS NOT NULL AND ask IS NOT NULL
        GROUP BY provider, symbol, bucket WITH NO DATA;
        CREATE MATERIALIZED VIEW IF NOT EXISTS tick_rate_stats
        WITH (timescaledb.continuous, timescaledb.materialized_only = true) AS
        SELECT provider, symbol, time_bucket(interval '1 minute', ts) AS bucket, count(*) AS ticks_per_minute
        FROM tick_data GROUP BY provider, symbol, bucket WITH NO DATA;

        PERFORM add_continuous_aggregate_policy('tick_agg_1m', start_offset => interval '1 hour',
            end_offset => NULL, schedule_interval => interval '1 minute', if_not_exists => true);
        PERFORM add_continuous_aggregate_policy('tick_rate_stats', start_offset => interval '1 hour',
            end_offset => NULL, schedule_interval => interval '1 minute', if_not_exists => true);
        PERFORM add_continuous_aggregate_policy('tick_agg_5m', start_offset => interval '2 hours',
            end_offset => NULL, schedule_interval => interval '5 minutes', if_not_exists => true);
        PERFORM add_continuous_aggregate_policy('tick_spread_stats', start_offset => interval '2 hours',
            end_offset => NULL, schedule_interval => interval '5 minutes', if_not_exists => true);
        PERFORM add_continuous_aggregate_policy('tick_agg_1h', start_offset => interval '1 day',
            end_offset => NULL, schedule_interval => interval '1 hour', if_not_exists => true);
        PERFORM add_continuous_aggregate_policy('tick_vwap_daily', start_offset => interval '3 days',
            end_offset => NULL, schedule_interval => interval '1 day', if_not_exists => true);
        RETURN;
    END IF;

    CREATE TABLE IF NOT EXISTS tick_agg_1m (
        provider text NOT NULL, symbol text NOT NULL, bucket timestamptz NOT NULL,
        open double precision, high double precision, low double precision, close double precision,
        volume double precision, vwap double precision, tick_count bigint,
        PRIMARY KEY (provider, symbol, bucket));
    CREATE TABLE IF NOT EXISTS tick_agg_5m (
        provider text NOT NULL, symbol text NOT NULL, bucket timestamptz NOT NULL,
        open double precision, high double precision, low double precision, close double precision,
        volume double precision, vwap double precision, tick_count bigint,
        PRIMARY KEY (provider, symbol, bucket));
    CREATE TABLE IF NOT EXISTS tick_agg_1h (
        provider text NOT NULL, symbol text NOT NULL, bucket timestamptz NOT NULL,
        open double precision, high double precision, low double precision, close double precision,
        volume double precision, vwap double precision, tick_count bigint,
        PRIMARY KEY (provider, symbol, bucket));
    CREATE TABLE IF NOT EXISTS tick_vwap_daily (
        provider text NOT NULL, symbol text NOT NULL, day timestamptz NOT NULL,
        vwap double precision, volume double precision, tick_count bigint,
        PRIMARY KEY (provider, symbol, day));
    CREATE TABLE IF NOT EXISTS tick_spread_stats (
        provider text NOT NULL, symbol text NOT NULL, bucket timestamptz NOT NULL,
        avg_spread double precision, min_spread double precision, max_spread double precision,
        avg_spread_bps double precision,
        PRIMARY KEY (provider, symbol, bucket));
    CREATE TABLE IF NOT EXISTS tick_rate_stats (
        provider text NOT NULL, symbol text NOT NULL, bucket timestamptz NOT NULL,
        ticks_per_minute bigint,
        PRIMARY KEY (provider, symbol, bucket));
    CREATE INDEX IF NOT EXISTS tick_agg_1m_bucket_idx ON tick_agg_1m (bucket);
    CREATE INDEX IF NOT EXISTS tick_agg_5m_bucket_idx ON tick_agg_5m (bucket);
    CREATE INDEX IF NOT EXISTS tick_agg_1h_bucket_idx ON tick_agg_1h (bucket);
    CREATE INDEX IF NOT EXISTS tick_vwap_daily_day_idx ON tick_vwap_daily (day);
    CREATE INDEX IF NOT EXISTS tick_spread_stats_bucket_idx ON tick_spread_stats (bucket);
    CREATE INDEX IF NOT EXISTS tick_rate_stats_bucket_idx ON tick_rate_stats (bucket);

    CREATE TABLE IF NOT EXISTS store_rollup_source_log (
        source text NOT NULL,
        lo     timestamptz NOT NULL,
        hi     timestamptz NOT NULL
    );
    CREATE INDEX IF NOT EXISTS store_rollup_invalidations_agg_bucket
        ON store_rollup_invalidations (aggregate, bucket);

    DROP TRIGGER IF EXISTS tick_data_rollup_ins ON tick_data;
    DROP TRIGGER IF EXISTS tick_data_rollup_upd ON tick_data;
    DROP TRIGGER IF EXISTS tick_data_rollup_del ON tick_data;
    CREATE TRIGGER tick_data_rollup_ins AFTER INSERT ON tick_data REFERENCING NEW TABLE AS new_rows
        FOR EACH STATEMENT EXECUTE FUNCTION store_rollup_log();
    CREATE TRIGGER tick_data_rollup_upd AFTER UPDATE ON tick_data
        REFERENCING OLD TABLE AS old_rows NEW TABLE AS new_rows
        FOR EACH STATEMENT EXECUTE FUNCTION store_rollup_log();
    CREATE TRIGGER tick_data_rollup_del AFTER DELETE ON tick_data REFERENCING OLD TABLE AS old_rows
        FOR EACH STATEMENT EXECUTE FUNCTION store_rollup_log();
END $$;

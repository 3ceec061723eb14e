-- Undo 0022_rollup_source_intervals: the bar rollups take every source interval again.
-- TimescaleDB: each continuous aggregate is recreated with 0005's definition (no WHERE),
-- keeping its rows (copied into the new materialization hypertable); the next refresh
-- recomputes the buckets outside the frozen range. Plain Postgres: the buckets of bars
-- the filter left out are invalidated, so the next refresh adds them back (frozen buckets
-- keep what they have: the rows 0022 deleted there are not restored).
DO $migration$
DECLARE
    agg record;
    kind "char";
    mat_schema name;
    mat_table name;
BEGIN
    FOR agg IN
        SELECT * FROM (VALUES
            ('bars_ohlcv_1h', interval '1 hour',
             ARRAY['1s', '5s', '10s', '15s', '30s', '1m', '2m', '3m', '5m', '10m', '15m', '30m']),
            ('bars_ohlcv_1d', interval '1 day',
             ARRAY['1s', '5s', '10s', '15s', '30s', '1m', '2m', '3m', '5m', '10m', '15m', '30m',
                   '1h', '2h', '4h', '6h', '12h'])
        ) AS v (name, width, allowed)
    LOOP
        kind := (SELECT relkind FROM pg_class WHERE oid = to_regclass(agg.name));
        IF kind = 'v' THEN
            IF NOT EXISTS (SELECT 1 FROM timescaledb_information.continuous_aggregates
                           WHERE view_schema = current_schema() AND view_name = agg.name
                             AND view_definition ~* '\mWHERE\M') THEN
                CONTINUE;
            END IF;
            EXECUTE format('CREATE TEMP TABLE %I ON COMMIT DROP AS SELECT * FROM %I',
                           'store_rollup_copy_' || agg.name, agg.name);
            EXECUTE format('DROP MATERIALIZED VIEW %I', agg.name);
            EXECUTE format($sql$
                CREATE MATERIALIZED VIEW %I
                WITH (timescaledb.continuous, timescaledb.materialized_only = true) AS
                SELECT provider, symbol, "interval", time_bucket(%L::interval, ts) AS bucket,
                       first(open, ts) AS open, max(high) AS high, min(low) AS low, last(close, ts) AS close,
                       sum(volume) AS volume
                FROM bars_ohlcv
                GROUP BY provider, symbol, "interval", bucket
                WITH NO DATA $sql$, agg.name, agg.width);
            SELECT materialization_hypertable_schema, materialization_hypertable_name INTO mat_schema, mat_table
            FROM timescaledb_information.continuous_aggregates
            WHERE view_schema = current_schema() AND view_name = agg.name;
            EXECUTE format($sql$
                INSERT INTO %I.%I (provider, symbol, "interval", bucket, open, high, low, close, volume)
                SELECT provider, symbol, "interval", bucket, open, high, low, close, volume FROM %I $sql$,
                mat_schema, mat_table, 'store_rollup_copy_' || agg.name);
        ELSIF kind IS NOT NULL AND to_regclass('store_rollup_invalidations') IS NOT NULL THEN
            INSERT INTO store_rollup_invalidations (aggregate, bucket)
            SELECT DISTINCT agg.name, date_bin(agg.width, b.ts, timestamptz '1970-01-01 00:00:00+00')
            FROM bars_ohlcv b
            WHERE NOT b."interval" = ANY(agg.allowed) AND isfinite(b.ts);
        END IF;
    END LOOP;
END
$migration$;

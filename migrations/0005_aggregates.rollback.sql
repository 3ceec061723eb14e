-- Undo 0005_aggregates (continuous aggregates on TimescaleDB, rollup tables on Postgres).
DO $migration$
DECLARE
    agg text;
    kind "char";
BEGIN
    FOREACH agg IN ARRAY ARRAY['bars_ohlcv_1h', 'bars_ohlcv_1d'] LOOP
        kind := (SELECT relkind FROM pg_class WHERE oid = to_regclass(agg));
        IF kind = 'v' THEN
            EXECUTE format('DROP MATERIALIZED VIEW IF EXISTS %I CASCADE', agg);
        ELSIF kind IS NOT NULL THEN
            EXECUTE format('DROP TABLE IF EXISTS %I CASCADE', agg);
        END IF;
    END LOOP;
END
$migration$;
DROP FUNCTION IF EXISTS store_rollup_invalidate() CASCADE;
DROP TABLE IF EXISTS store_rollup_invalidations, store_aggregates;

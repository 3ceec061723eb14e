DROP TRIGGER IF EXISTS tick_data_rollup_ins ON tick_data;
DROP TRIGGER IF EXISTS tick_data_rollup_upd ON tick_data;
DROP TRIGGER IF EXISTS tick_data_rollup_del ON tick_data;
DROP FUNCTION IF EXISTS store_rollup_log() CASCADE;
DROP TABLE IF EXISTS store_rollup_source_log;
DO $$
DECLARE
    n text;
BEGIN
    FOREACH n IN ARRAY ARRAY['tick_agg_1m', 'tick_agg_5m', 'tick_agg_1h', 'tick_vwap_daily',
                             'tick_spread_stats', 'tick_rate_stats'] LOOP
        IF (SELECT relkind FROM pg_class WHERE oid = to_regclass(n)) = 'v' THEN
            EXECUTE format('DROP MATERIALIZED VIEW IF EXISTS %I CASCADE', n);
        ELSE
            EXECUTE format('DROP TABLE IF EXISTS %I CASCADE', n);
        END IF;
    END LOOP;
END $$;
DELETE FROM store_rollup_invalidations WHERE aggregate LIKE 'tick\_%';
DELETE FROM store_aggregates WHERE source = 'tick_data';
DO $$
BEGIN
    IF to_regprocedure('store_rollup_invalidate()') IS NOT NULL THEN
        ALTER FUNCTION store_rollup_invalidate() SECURITY INVOKER;
        ALTER FUNCTION store_rollup_invalidate() RESET search_path;
    END IF;
END $$;

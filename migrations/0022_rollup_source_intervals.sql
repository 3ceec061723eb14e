-- depends: 0005_aggregates 0021_bar_intervals
-- The bar rollups aggregate only source intervals strictly finer than their bucket:
-- bars_ohlcv_1h from sub-hour bars (1s 5s 10s 15s 30s 1m 2m 3m 5m 10m 15m 30m),
-- bars_ohlcv_1d from sub-day bars (those and 1h 2h 4h 6h 12h). Before, a daily bar became
-- one "hourly" bucket of bars_ohlcv_1h. The lists are those of app/timeseries/intervals.py
-- (`finer_than`), written out here (frozen history).
--
-- Rollup rows already stored (frozen buckets too, whose raw rows retention removed):
--   * an interval spelling renamed by 0021 (`1D`, `1min`, ...) is normalised with the same
--     mapping; where that makes two rows of one bucket (`1min` beside `1m`), the row under
--     the canonical name is kept, else the one of the first spelling (0021's rule for bars);
--   * rows whose interval is not strictly finer than the bucket (or is no interval of the
--     vocabulary) are deleted: they are wrong by the new definition.
-- Every other rollup row is unchanged: rollups group by interval, so the filter only
-- removes whole (provider, symbol, interval) series from them.
--
-- Plain Postgres: the rollup tables are edited in place; the store computes them from the
-- catalog's `where` (app/timeseries/catalog.py), and 0005's invalidation trigger stays.
-- TimescaleDB: a continuous aggregate's query cannot be altered, so each is recreated with
-- the WHERE: its rows that stay valid are copied out, normalised as above, the aggregate
-- is dropped and created again (the 0005 definition plus the WHERE, WITH NO DATA; 0005
-- gave it no grant, policy, compression, index or comment beyond TimescaleDB's own), and
-- the rows are inserted into its new materialization hypertable (INSERT ... SELECT, as
-- TimescaleDB's own cagg_migrate copied data into a new aggregate). A new continuous
-- aggregate counts its whole range as invalidated, and refresh_continuous_aggregate
-- cannot run inside the migration's transaction: the store's next refresh (the scheduled
-- one, refresh_pending, or POST /refresh/aggregate) recomputes the buckets outside the
-- frozen range from the raw rows and replaces the copied rows there; frozen buckets are
-- never refreshed (only an explicit rebuild recomputes them), so the copied rows stay.
-- Until that refresh, readers see the copied rows.
-- Idempotent: the deletes and updates find nothing the second time, and an aggregate that
-- already has its WHERE is left alone.

DO $migration$
DECLARE
    agg record;
    kind "char";
    target text;
    spellings text;
    renames boolean;
    mat_schema name;
    mat_table name;
    cagg_sql text := $sql$
        CREATE MATERIALIZED VIEW %I
        WITH (timescaledb.continuous, timescaledb.materialized_only = true) AS
        SELECT provider, symbol, "interval", time_bucket(%L::interval, ts) AS bucket,
               first(open, ts) AS open, max(high) AS high, min(low) AS low, last(close, ts) AS close,
               sum(volume) AS volume
        FROM bars_ohlcv
        WHERE "interval" IN (%s)
        GROUP BY provider, symbol, "interval", bucket
        WITH NO DATA $sql$;
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
        IF kind IS NULL THEN
            CONTINUE;
        END IF;
        IF kind = 'v' THEN
            IF EXISTS (SELECT 1 FROM timescaledb_information.continuous_aggregates
                       WHERE view_schema = current_schema() AND view_name = agg.name
                         AND view_definition ~* '\mWHERE\M') THEN
                CONTINUE;  -- already recreated with its WHERE
            END IF;
            target := 'store_rollup_copy_' || agg.name;
            EXECUTE format('CREATE TEMP TABLE %I ON COMMIT DROP AS SELECT * FROM %I', target, agg.name);
            EXECUTE format('ANALYZE %I', target);  -- the planner's row counts for the statements below
        ELSE
            target := agg.name;
        END IF;

        -- Each stored spelling and its canonical name (NULL: none), as in 0021.
        spellings := 'store_rollup_spellings_' || agg.name;
        EXECUTE format($sql$
            CREATE TEMP TABLE %I ON COMMIT DROP AS
            WITH canonical(name, seconds) AS (VALUES
                    ('1s', 1), ('5s', 5), ('10s', 10), ('15s', 15), ('30s', 30),
                    ('1m', 60), ('2m', 120), ('3m', 180), ('5m', 300), ('10m', 600), ('15m', 900), ('30m', 1800),
                    ('1h', 3600), ('2h', 7200), ('4h', 14400), ('6h', 21600), ('12h', 43200),
                    ('1d', 86400), ('1w', 604800), ('1mo', 2592000)),
                 units(unit, size) AS (VALUES
                    ('s', 1), ('sec', 1), ('secs', 1), ('second', 1), ('seconds', 1),
                    ('m', 60), ('min', 60), ('mins', 60), ('minute', 60), ('minutes', 60), ('t', 60),
                    ('h', 3600), ('hr', 3600), ('hrs', 3600), ('hour', 3600), ('hours', 3600),
                    ('d', 86400), ('day', 86400), ('days', 86400),
                    ('w', 604800), ('wk', 604800), ('week', 604800), ('weeks', 604800),
                    ('mo', 2592000), ('mon', 2592000), ('month', 2592000), ('months', 2592000)),
                 spelled AS (
                    SELECT s.spelling, regexp_match(btrim(s.spelling), '^([0-9]{1,6})\s*([A-Za-z]{1,7})$') AS m
                    FROM (SELECT DISTINCT "interval" AS spelling FROM %I) s),
                 sized AS (
                    SELECT spelling, m[1]::bigint AS n,
                           CASE WHEN m[2] = 'M' THEN 2592000 ELSE u.size END AS size
                    FROM spelled LEFT JOIN units u ON u.unit = lower(m[2]))
            SELECT sized.spelling,
                   coalesce((SELECT c.name FROM canonical c WHERE c.name = sized.spelling),
                            (SELECT c.name FROM canonical c
                             WHERE c.seconds = sized.n * sized.size
                               AND (sized.size = 2592000) = (c.name = '1mo'))) AS name
            FROM sized $sql$, spellings, target);

        -- Not strictly finer than the bucket (or no interval at all): not part of the rollup.
        EXECUTE format($sql$
            DELETE FROM %I r USING %I m
            WHERE r."interval" = m.spelling AND (m.name IS NULL OR NOT m.name = ANY(%L::text[])) $sql$,
            target, spellings, agg.allowed);
        -- (only where some spelling is renamed: nothing to do, and nothing read, otherwise)
        EXECUTE format('SELECT EXISTS (SELECT 1 FROM %I WHERE name <> spelling AND name = ANY(%L::text[]))',
                       spellings, agg.allowed) INTO renames;
        IF renames THEN
            -- One bucket under two spellings: keep the canonical row, else the first spelling
            -- (one sort of the rows concerned, not a look-up per row).
            EXECUTE format($sql$
                DELETE FROM %1$I t USING (
                    SELECT r.ctid AS row_id,
                           row_number() OVER (PARTITION BY r.provider, r.symbol, m.name, r.bucket
                                              ORDER BY r."interval" = m.name DESC, r."interval") AS n
                    FROM %1$I r JOIN %2$I m ON m.spelling = r."interval"
                    WHERE m.name IN (SELECT name FROM %2$I WHERE name <> spelling)) d
                WHERE t.ctid = d.row_id AND d.n > 1 $sql$, target, spellings);
            EXECUTE format($sql$
                UPDATE %I b SET "interval" = m.name FROM %I m
                WHERE b."interval" = m.spelling AND m.name <> m.spelling $sql$, target, spellings);
        END IF;

        IF kind = 'v' THEN
            EXECUTE format('DROP MATERIALIZED VIEW %I', agg.name);
            EXECUTE format(cagg_sql, agg.name, agg.width,
                           (SELECT string_agg(quote_literal(a), ', ') FROM unnest(agg.allowed) a));
            SELECT materialization_hypertable_schema, materialization_hypertable_name INTO mat_schema, mat_table
            FROM timescaledb_information.continuous_aggregates
            WHERE view_schema = current_schema() AND view_name = agg.name;
            EXECUTE format($sql$
                INSERT INTO %I.%I (provider, symbol, "interval", bucket, open, high, low, close, volume)
                SELECT provider, symbol, "interval", bucket, open, high, low, close, volume FROM %I $sql$,
                mat_schema, mat_table, target);
        END IF;
    END LOOP;
END
$migration$;

-- depends: 0002_job_runs
-- Market data 1/4: the time-series backend, the updated_at trigger function, bars_ohlcv.
--
-- Frozen history: every value is written here (never read from the application), so a
-- database migrated today gets what this file said when it was written. A schema change
-- is a new migration. Idempotent: a re-run (yoyo may repeat a migration after a kill)
-- changes nothing.
--
-- The backend is chosen here: TimescaleDB when the extension is installed, or can be
-- (available and preloaded through shared_preload_libraries, and this role may create
-- it); otherwise plain Postgres range partitions that the store manages itself
-- (app/timeseries/partitions.py). Afterwards each table's own kind is the truth.
--
-- bars_ohlcv: chunk / partition width 7 days; on TimescaleDB compressed after 90 days,
-- segmented by (provider, symbol, interval), ordered by ts DESC. On plain Postgres:
-- PARTITION BY RANGE (ts), a DEFAULT partition, an index on ts DESC and epoch-aligned
-- partitions from one width before now to four widths ahead (named bars_ohlcv_pYYYYMMDD,
-- created like the store's partition code does: a copy of the parent, attached).

DO $migration$
BEGIN
    IF NOT EXISTS (SELECT 1 FROM pg_extension WHERE extname = 'timescaledb')
       AND EXISTS (SELECT 1 FROM pg_available_extensions WHERE name = 'timescaledb')
       -- pg_settings hides this setting from roles that may not read it: they get Postgres.
       AND EXISTS (SELECT 1 FROM pg_settings WHERE name = 'shared_preload_libraries'
                   AND setting ~ '(^|[ ,])timescaledb($|[ ,])') THEN
        BEGIN
            CREATE EXTENSION IF NOT EXISTS timescaledb;
        EXCEPTION WHEN insufficient_privilege THEN
            RAISE NOTICE 'timescaledb is preloaded but this role may not create it: plain Postgres partitioning';
        END;
    END IF;
END
$migration$;

CREATE OR REPLACE FUNCTION store_touch_updated_at() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    NEW.updated_at := now();
    RETURN NEW;
END $$;

DO $migration$
DECLARE
    t record;
    timescaledb boolean := EXISTS (SELECT 1 FROM pg_extension WHERE extname = 'timescaledb');
    slot timestamptz;
    piece record;
    part text;
    default_part text;
BEGIN
    FOR t IN
        SELECT * FROM (VALUES
            ('bars_ohlcv', 'ts', interval '7 days', interval '90 days', 'provider, symbol, interval', 'ts DESC',
             $columns$
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
             $columns$)
        ) AS v (name, time_column, chunk, compress_after, segmentby, orderby, columns)
    LOOP
        IF timescaledb THEN
            EXECUTE format('CREATE TABLE IF NOT EXISTS %I (%s)', t.name, t.columns);
            PERFORM create_hypertable(t.name::regclass, by_range(t.time_column, t.chunk), if_not_exists => true);
            IF t.compress_after IS NOT NULL THEN
                EXECUTE format('ALTER TABLE %I SET (timescaledb.compress, timescaledb.compress_segmentby = %L, '
                               'timescaledb.compress_orderby = %L)', t.name, t.segmentby, t.orderby);
                PERFORM add_compression_policy(t.name::regclass, t.compress_after, if_not_exists => true);
            END IF;
        ELSE
            IF to_regclass(t.name) IS NOT NULL
               AND (SELECT relkind FROM pg_class WHERE oid = to_regclass(t.name)) <> 'p' THEN
                RAISE EXCEPTION '% exists but is not partitioned; convert it before migrating', t.name;
            END IF;
            EXECUTE format('CREATE TABLE IF NOT EXISTS %I (%s) PARTITION BY RANGE (%I)',
                           t.name, t.columns, t.time_column);
            EXECUTE format('CREATE TABLE IF NOT EXISTS %I PARTITION OF %I DEFAULT', t.name || '_default', t.name);
            EXECUTE format('CREATE INDEX IF NOT EXISTS %I ON %I (%I DESC)',
                           t.name || '_' || t.time_column || '_idx', t.name, t.time_column);
            -- Partitions around now: the epoch-aligned slots from one width back to four
            -- ahead, each filled where no partition covers it yet. Serialised with the
            -- store's partition upkeep by its advisory lock (class 'MDSP', the parent's oid).
            PERFORM pg_advisory_xact_lock(1296323408, t.name::regclass::oid::int);
            SELECT c.relname INTO default_part
            FROM pg_partitioned_table p JOIN pg_class c ON c.oid = p.partdefid
            WHERE p.partrelid = t.name::regclass;
            slot := date_bin(t.chunk, now() - t.chunk, timestamptz '1970-01-01 00:00:00+00');
            WHILE slot <= now() + 4 * t.chunk LOOP
                FOR piece IN
                    SELECT lower(gap) AS lo, upper(gap) AS hi
                    FROM unnest(tstzmultirange(tstzrange(slot, slot + t.chunk)) - (
                        SELECT coalesce(range_agg(tstzrange(b[1]::timestamptz, b[2]::timestamptz)), '{}')
                        FROM pg_inherits i
                        JOIN pg_class c ON c.oid = i.inhrelid
                        CROSS JOIN LATERAL regexp_match(pg_get_expr(c.relpartbound, 0),
                                                        'FROM \(''([^'']*)''\) TO \(''([^'']*)''\)') AS b
                        WHERE i.inhparent = t.name::regclass AND b IS NOT NULL)) AS gap
                    ORDER BY 1
                LOOP
                    part := t.name || '_p' || to_char(piece.lo AT TIME ZONE 'UTC',
                        CASE WHEN (piece.lo AT TIME ZONE 'UTC')::time = '00:00' THEN 'YYYYMMDD'
                             ELSE 'YYYYMMDD_HH24MISS' END);
                    EXECUTE format('CREATE TABLE %I (LIKE %I INCLUDING ALL)', part, t.name);
                    -- The CHECK lets ATTACH skip scanning the new table; dropped right after.
                    EXECUTE format('ALTER TABLE %I ADD CONSTRAINT %I CHECK (%I >= %L AND %I < %L)',
                                   part, part || '_bounds', t.time_column, piece.lo, t.time_column, piece.hi);
                    IF default_part IS NOT NULL THEN
                        EXECUTE format('WITH moved AS (DELETE FROM %I WHERE %I >= $1 AND %I < $2 RETURNING *) '
                                       'INSERT INTO %I SELECT * FROM moved',
                                       default_part, t.time_column, t.time_column, part)
                            USING piece.lo, piece.hi;
                    END IF;
                    EXECUTE format('ALTER TABLE %I ATTACH PARTITION %I FOR VALUES FROM (%L) TO (%L)',
                                   t.name, part, piece.lo, piece.hi);
                    EXECUTE format('ALTER TABLE %I DROP CONSTRAINT %I', part, part || '_bounds');
                END LOOP;
                slot := slot + t.chunk;
            END LOOP;
        END IF;
        EXECUTE format('DROP TRIGGER IF EXISTS %I ON %I', t.name || '_updated_at', t.name);
        EXECUTE format('CREATE TRIGGER %I BEFORE UPDATE ON %I FOR EACH ROW EXECUTE FUNCTION store_touch_updated_at()',
                       t.name || '_updated_at', t.name);
    END LOOP;
END
$migration$;

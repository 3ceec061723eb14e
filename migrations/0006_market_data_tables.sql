-- depends: 0005_aggregates
-- Market data 4/4: tenants and the remaining time-series tables.
--
-- Frozen history (see 0003). bars, fundamentals, news and options_snap are
-- tenant-scoped (row-level security in 0007); signals is provider-based like bars_ohlcv.
-- Symbols are stored upper-case (CHECK), every table has created_at / updated_at with
-- an update trigger, all times are timestamptz (UTC). Time-series storage as in 0003,
-- with these widths (chunk on TimescaleDB, partition on Postgres): bars 7 days,
-- fundamentals 90 days, news 30 days, options_snap 7 days, signals 7 days; on
-- TimescaleDB signals is compressed after 30 days, segmented by (provider, symbol,
-- name), ordered by ts DESC.

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

CREATE TABLE IF NOT EXISTS tenants (
    id         uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    tenant_id  varchar(50) NOT NULL UNIQUE,
    name       text,
    created_at timestamptz NOT NULL DEFAULT now(),
    updated_at timestamptz NOT NULL DEFAULT now()
);
DROP TRIGGER IF EXISTS tenants_updated_at ON tenants;
CREATE TRIGGER tenants_updated_at BEFORE UPDATE ON tenants FOR EACH ROW EXECUTE FUNCTION store_touch_updated_at();

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
            ('bars', 'ts', interval '7 days', NULL::interval, NULL, NULL,
             $columns$
                ts          timestamptz NOT NULL,
                tenant_id   varchar(50) NOT NULL,
                vendor      text NOT NULL,
                symbol      text NOT NULL CONSTRAINT bars_symbol_upper CHECK (symbol = upper(symbol)),
                timeframe   text NOT NULL,
                open_price  numeric(20,8),
                high_price  numeric(20,8),
                low_price   numeric(20,8),
                close_price numeric(20,8),
                volume      bigint,
                created_at  timestamptz NOT NULL DEFAULT now(),
                updated_at  timestamptz NOT NULL DEFAULT now(),
                PRIMARY KEY (ts, tenant_id, vendor, symbol, timeframe)
             $columns$),
            ('fundamentals', 'asof', interval '90 days', NULL, NULL, NULL,
             $columns$
                asof              timestamptz NOT NULL,
                tenant_id         varchar(50) NOT NULL,
                vendor            text NOT NULL,
                symbol            text NOT NULL CONSTRAINT fundamentals_symbol_upper CHECK (symbol = upper(symbol)),
                total_assets      numeric(25,2),
                total_liabilities numeric(25,2),
                net_income        numeric(25,2),
                eps               numeric(10,4),
                created_at        timestamptz NOT NULL DEFAULT now(),
                updated_at        timestamptz NOT NULL DEFAULT now(),
                PRIMARY KEY (asof, tenant_id, vendor, symbol)
             $columns$),
            ('news', 'published_at', interval '30 days', NULL, NULL, NULL,
             $columns$
                published_at    timestamptz NOT NULL,
                tenant_id       varchar(50) NOT NULL,
                vendor          text NOT NULL,
                id              text NOT NULL,
                title           text,
                url             text,
                symbol          text CONSTRAINT news_symbol_upper CHECK (symbol = upper(symbol)),
                sentiment_score numeric(5,4),
                created_at      timestamptz NOT NULL DEFAULT now(),
                updated_at      timestamptz NOT NULL DEFAULT now(),
                PRIMARY KEY (published_at, tenant_id, vendor, id)
             $columns$),
            ('options_snap', 'ts', interval '7 days', NULL, NULL, NULL,
             $columns$
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
                spot        numeric(20,8),
                created_at  timestamptz NOT NULL DEFAULT now(),
                updated_at  timestamptz NOT NULL DEFAULT now(),
                PRIMARY KEY (ts, tenant_id, vendor, symbol, expiry, option_type, strike)
             $columns$),
            ('signals', 'ts', interval '7 days', interval '30 days', 'provider, symbol, name', 'ts DESC',
             $columns$
                provider   text NOT NULL,
                symbol     text NOT NULL CONSTRAINT signals_symbol_upper CHECK (symbol = upper(symbol)),
                ts         timestamptz NOT NULL,
                name       text NOT NULL,
                value      double precision NOT NULL,
                score      double precision,
                metadata   jsonb NOT NULL DEFAULT '{}'::jsonb,
                created_at timestamptz NOT NULL DEFAULT now(),
                updated_at timestamptz NOT NULL DEFAULT now(),
                PRIMARY KEY (provider, symbol, ts, name)
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

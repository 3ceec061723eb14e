-- depends: 0012_platform_writes
-- tick_data: the pipeline's ticks (provider, symbol, ts) -> price, size, bid, ask.
-- Frozen history: literal SQL only. Idempotent.
--
-- Same backend as the other time-series tables (chosen once by 0003): a hypertable with
-- one-day chunks, compressed after 7 days segmented by provider and symbol, when
-- bars_ohlcv is a hypertable; otherwise range-partitioned by day (tick volumes: millions
-- of rows a day) with a DEFAULT partition, partitions made from one day back to four days
-- ahead here and kept ahead by every retention run (app/timeseries/partitions.py).

DO $$
DECLARE
    plain boolean := (SELECT relkind = 'p' FROM pg_class WHERE oid = to_regclass('bars_ohlcv'));
    lo timestamptz;
    part text;
BEGIN
    IF NOT plain THEN
        CREATE TABLE IF NOT EXISTS tick_data (
            provider   text NOT NULL,
            symbol     text NOT NULL CONSTRAINT tick_data_symbol_upper CHECK (symbol = upper(symbol)),
            price      double precision NOT NULL,
            ts         timestamptz NOT NULL,
            size       double precision,
            bid        double precision,
            ask        double precision,
            created_at timestamptz NOT NULL DEFAULT now(),
            PRIMARY KEY (provider, symbol, ts)
        );
        PERFORM create_hypertable('tick_data'::regclass, by_range('ts', interval '1 day'), if_not_exists => true);
        IF NOT EXISTS (SELECT 1 FROM timescaledb_information.hypertables
                       WHERE hypertable_schema = current_schema() AND hypertable_name = 'tick_data'
                         AND compression_enabled) THEN
            ALTER TABLE tick_data SET (timescaledb.compress, timescaledb.compress_segmentby = 'provider, symbol',
                                       timescaledb.compress_orderby = 'ts DESC');
        END IF;
        PERFORM add_compression_policy('tick_data'::regclass, interval '7 days', if_not_exists => true);
    ELSE
        CREATE TABLE IF NOT EXISTS tick_data (
            provider   text NOT NULL,
            symbol     text NOT NULL CONSTRAINT tick_data_symbol_upper CHECK (symbol = upper(symbol)),
            price      double precision NOT NULL,
            ts         timestamptz NOT NULL,
            size       double precision,
            bid        double precision,
            ask        double precision,
            created_at timestamptz NOT NULL DEFAULT now(),
            PRIMARY KEY (provider, symbol, ts)
        ) PARTITION BY RANGE (ts);
        CREATE TABLE IF NOT EXISTS tick_data_default PARTITION OF tick_data DEFAULT;
        CREATE INDEX IF NOT EXISTS tick_data_ts_idx ON tick_data (ts DESC);
        FOR i IN 0..5 LOOP
            lo := date_bin(interval '1 day', now() - interval '1 day', timestamptz '1970-01-01 00:00:00+00')
                  + i * interval '1 day';
            part := 'tick_data_p' || to_char(lo AT TIME ZONE 'UTC', 'YYYYMMDD');
            IF to_regclass(part) IS NULL
               AND NOT EXISTS (SELECT 1 FROM tick_data_default WHERE ts >= lo AND ts < lo + interval '1 day') THEN
                EXECUTE format('CREATE TABLE %I PARTITION OF tick_data FOR VALUES FROM (%L) TO (%L)',
                               part, lo, lo + interval '1 day');
            END IF;
        END LOOP;
    END IF;
END $$;

-- Retention: 30 days by default (an existing policy is never overwritten).
INSERT INTO store_retention_policies (table_name, retain) VALUES ('tick_data', interval '30 days')
ON CONFLICT DO NOTHING;

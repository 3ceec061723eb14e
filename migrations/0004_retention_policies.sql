-- depends: 0003_bars_ohlcv
-- Market data 2/4: retention policies, one row per time-series table.
--
-- Frozen history (see 0003). Seeded with the defaults documented in docs/retention.md,
-- written out here; an existing row is never overwritten. `last_cutoff` is the
-- retention watermark: rollup buckets that begin before it are the long-term record and
-- are never recomputed from the (partly dropped) source.

CREATE TABLE IF NOT EXISTS store_retention_policies (
    table_name      text PRIMARY KEY,
    retain          interval NOT NULL CHECK (retain >= interval '1 hour'),
    enabled         boolean NOT NULL DEFAULT true,
    updated_at      timestamptz NOT NULL DEFAULT now(),
    last_applied_at timestamptz,
    last_cutoff     timestamptz,
    last_result     jsonb
);

INSERT INTO store_retention_policies (table_name, retain) VALUES
    ('bars', interval '1825 days'),
    ('fundamentals', interval '3650 days'),
    ('news', interval '730 days'),
    ('options_snap', interval '365 days'),
    ('bars_ohlcv', interval '1825 days'),
    ('signals', interval '365 days')
ON CONFLICT DO NOTHING;

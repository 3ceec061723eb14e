-- depends: 0011_backfill
-- The platform's writers on our schema (issue 15). Frozen history: literal SQL only.
-- Idempotent (yoyo may re-run it after a kill); existing rows keep their values.

-- news: the writers never send `id` and rely on its default. A random UUID (as text):
-- an upsert without an id always inserts a new row (its key never matches).
ALTER TABLE news ALTER COLUMN id SET DEFAULT gen_random_uuid()::text;

-- job_runs: created_at / updated_at like every other table (progress updates set
-- updated_at = NOW() themselves; the trigger keeps it current for every other UPDATE).
-- Existing runs get their started_at / last known time, not the migration's time.
ALTER TABLE job_runs ADD COLUMN IF NOT EXISTS created_at timestamptz;
ALTER TABLE job_runs ADD COLUMN IF NOT EXISTS updated_at timestamptz;
UPDATE job_runs SET created_at = started_at WHERE created_at IS NULL;
UPDATE job_runs SET updated_at = coalesce(completed_at, started_at) WHERE updated_at IS NULL;
ALTER TABLE job_runs
    ALTER COLUMN created_at SET DEFAULT now(),
    ALTER COLUMN created_at SET NOT NULL,
    ALTER COLUMN updated_at SET DEFAULT now(),
    ALTER COLUMN updated_at SET NOT NULL;
DROP TRIGGER IF EXISTS job_runs_updated_at ON job_runs;
CREATE TRIGGER job_runs_updated_at BEFORE UPDATE ON job_runs
    FOR EACH ROW EXECUTE FUNCTION store_touch_updated_at();

-- signals: a signal without metadata is written with metadata NULL.
ALTER TABLE signals ALTER COLUMN metadata DROP NOT NULL;

-- latest_prices in the platform's shape: the newest close per tenant, vendor and symbol
-- from the tenant-scoped bars (security_invoker: the caller's row-level security
-- applies). The bars_ohlcv-based view of 0008 lives on as latest_ohlcv_prices.
CREATE OR REPLACE VIEW latest_ohlcv_prices WITH (security_invoker = true) AS
SELECT DISTINCT ON (provider, symbol, "interval")
       provider, symbol, "interval", ts, close AS price, open, high, low, close, volume
FROM bars_ohlcv
ORDER BY provider, symbol, "interval", ts DESC;

DO $$
BEGIN
    IF EXISTS (SELECT 1 FROM pg_attribute
               WHERE attrelid = to_regclass('latest_prices') AND attname = 'interval' AND NOT attisdropped) THEN
        DROP VIEW latest_prices;
    END IF;
END $$;

CREATE OR REPLACE VIEW latest_prices WITH (security_invoker = true) AS
SELECT DISTINCT ON (tenant_id, vendor, symbol)
       tenant_id, vendor, symbol, close_price AS price, ts AS price_timestamp
FROM bars
WHERE close_price IS NOT NULL
ORDER BY tenant_id, vendor, symbol, ts DESC, timeframe;

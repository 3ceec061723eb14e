DROP VIEW IF EXISTS latest_prices;
CREATE OR REPLACE VIEW latest_prices WITH (security_invoker = true) AS
SELECT DISTINCT ON (provider, symbol, "interval")
       provider, symbol, "interval", ts, close AS price, open, high, low, close, volume
FROM bars_ohlcv
ORDER BY provider, symbol, "interval", ts DESC;
DROP VIEW IF EXISTS latest_ohlcv_prices;
UPDATE signals SET metadata = '{}'::jsonb WHERE metadata IS NULL;
ALTER TABLE signals ALTER COLUMN metadata SET NOT NULL;
DROP TRIGGER IF EXISTS job_runs_updated_at ON job_runs;
ALTER TABLE job_runs DROP COLUMN IF EXISTS updated_at, DROP COLUMN IF EXISTS created_at;
ALTER TABLE news ALTER COLUMN id DROP DEFAULT;

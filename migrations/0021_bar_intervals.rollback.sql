ALTER TABLE bars_ohlcv DROP CONSTRAINT IF EXISTS bars_ohlcv_interval_known;

-- Undo 0003_bars_ohlcv.
DROP TABLE IF EXISTS bars_ohlcv CASCADE;
DROP FUNCTION IF EXISTS store_touch_updated_at() CASCADE;

-- depends: 0007_row_level_security
-- Views the platform reads (CONTRACTS.md §5). security_invoker: the caller's
-- row-level security applies through the views (a tenant sees its own rows only).

-- The newest bar of every (provider, symbol, interval).
CREATE OR REPLACE VIEW latest_prices WITH (security_invoker = true) AS
SELECT DISTINCT ON (provider, symbol, "interval")
       provider, symbol, "interval", ts, close AS price, open, high, low, close, volume
FROM bars_ohlcv
ORDER BY provider, symbol, "interval", ts DESC;

-- How current each dataset is, per provider / vendor: newest timestamp and its age.
CREATE OR REPLACE VIEW data_freshness WITH (security_invoker = true) AS
SELECT 'bars_ohlcv'::text AS dataset, provider AS source, max(ts) AS last_ts, now() - max(ts) AS lag
FROM bars_ohlcv GROUP BY provider
UNION ALL
SELECT 'signals', provider, max(ts), now() - max(ts) FROM signals GROUP BY provider
UNION ALL
SELECT 'bars', vendor, max(ts), now() - max(ts) FROM bars GROUP BY vendor
UNION ALL
SELECT 'options_snap', vendor, max(ts), now() - max(ts) FROM options_snap GROUP BY vendor
UNION ALL
SELECT 'fundamentals', vendor, max(asof), now() - max(asof) FROM fundamentals GROUP BY vendor
UNION ALL
SELECT 'news', vendor, max(published_at), now() - max(published_at) FROM news GROUP BY vendor;

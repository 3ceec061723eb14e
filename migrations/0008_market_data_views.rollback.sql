DROP VIEW IF EXISTS data_freshness;
DROP VIEW IF EXISTS latest_prices;

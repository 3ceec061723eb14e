-- depends: 0011_backfill 0020_retention_frozen_range
-- One interval vocabulary for bars_ohlcv (the list in app/timeseries/intervals.py,
-- docs/backfill.md): stored spellings are normalised to their canonical name, then a
-- CHECK makes the database reject any other value.
--
-- A spelling is read as a count and a unit (`1D`, `1min`, `60m`, `24h`, `1M` = a month)
-- and mapped to the canonical name of that duration (`1d`, `1m`, `1h`, `1d`, `1mo`).
-- Where a normalised row would collide with a row already stored under the canonical
-- name (`1D` beside `1d`: the same bar twice), the canonical row is kept and the other
-- deleted. A value with no canonical name stops the migration with the list of such
-- values: fix or delete those rows, then migrate again.
--
-- Rollup rows of buckets frozen by retention keep the spelling they were computed with;
-- every other bucket is recomputed by the next refresh (the UPDATE invalidates it).
-- Idempotent (nothing to do once the CHECK exists); plain SQL for Postgres 15 and
-- TimescaleDB alike. It reads bars_ohlcv once.

DO $migration$
DECLARE
    unknown text;
BEGIN
    IF EXISTS (SELECT 1 FROM pg_constraint
               WHERE conrelid = 'bars_ohlcv'::regclass AND conname = 'bars_ohlcv_interval_known') THEN
        RETURN;
    END IF;

    CREATE TEMP TABLE store_interval_spellings ON COMMIT DROP AS
    WITH canonical(name, seconds) AS (VALUES
            ('1s', 1), ('5s', 5), ('10s', 10), ('15s', 15), ('30s', 30),
            ('1m', 60), ('2m', 120), ('3m', 180), ('5m', 300), ('10m', 600), ('15m', 900), ('30m', 1800),
            ('1h', 3600), ('2h', 7200), ('4h', 14400), ('6h', 21600), ('12h', 43200),
            ('1d', 86400), ('1w', 604800), ('1mo', 2592000)),
         units(unit, size) AS (VALUES
            ('s', 1), ('sec', 1), ('secs', 1), ('second', 1), ('seconds', 1),
            ('m', 60), ('min', 60), ('mins', 60), ('minute', 60), ('minutes', 60), ('t', 60),
            ('h', 3600), ('hr', 3600), ('hrs', 3600), ('hour', 3600), ('hours', 3600),
            ('d', 86400), ('day', 86400), ('days', 86400),
            ('w', 604800), ('wk', 604800), ('week', 604800), ('weeks', 604800),
            ('mo', 2592000), ('mon', 2592000), ('month', 2592000), ('months', 2592000)),
         spelled AS (
            SELECT s.spelling, regexp_match(btrim(s.spelling), '^([0-9]{1,6})\s*([A-Za-z]{1,7})$') AS m
            FROM (SELECT DISTINCT "interval" AS spelling FROM bars_ohlcv) s),
         sized AS (
            SELECT spelling, m[1]::bigint AS n,
                   CASE WHEN m[2] = 'M' THEN 2592000 ELSE u.size END AS size
            FROM spelled LEFT JOIN units u ON u.unit = lower(m[2]))
    SELECT sized.spelling,
           coalesce((SELECT c.name FROM canonical c WHERE c.name = sized.spelling),
                    (SELECT c.name FROM canonical c
                     WHERE c.seconds = sized.n * sized.size AND (sized.size = 2592000) = (c.name = '1mo'))) AS name
    FROM sized;

    SELECT string_agg(quote_literal(spelling), ', ' ORDER BY spelling) INTO unknown
    FROM store_interval_spellings WHERE name IS NULL;
    IF unknown IS NOT NULL THEN
        RAISE EXCEPTION 'bars_ohlcv holds interval values outside the vocabulary: %', unknown
            USING HINT = 'allowed: 1s 5s 10s 15s 30s 1m 2m 3m 5m 10m 15m 30m 1h 2h 4h 6h 12h 1d 1w 1mo; '
                         'update or delete those rows, then run the migration again';
    END IF;

    -- The same bar under two spellings: keep the canonical row.
    DELETE FROM bars_ohlcv b
    USING store_interval_spellings m
    WHERE b."interval" = m.spelling AND m.name <> m.spelling
      AND EXISTS (SELECT 1 FROM bars_ohlcv c
                  WHERE c.provider = b.provider AND c.symbol = b.symbol AND c."interval" = m.name AND c.ts = b.ts);
    -- Two non-canonical spellings of one bar (`1D` and `1day`): keep the first spelling.
    DELETE FROM bars_ohlcv b
    USING store_interval_spellings m
    WHERE b."interval" = m.spelling AND m.name <> m.spelling
      AND EXISTS (SELECT 1 FROM bars_ohlcv c JOIN store_interval_spellings cm ON cm.spelling = c."interval"
                  WHERE c.provider = b.provider AND c.symbol = b.symbol AND c.ts = b.ts
                    AND cm.name = m.name AND c."interval" < b."interval");
    UPDATE bars_ohlcv b SET "interval" = m.name
    FROM store_interval_spellings m
    WHERE b."interval" = m.spelling AND m.name <> m.spelling;

    ALTER TABLE bars_ohlcv ADD CONSTRAINT bars_ohlcv_interval_known CHECK ("interval" IN (
        '1s', '5s', '10s', '15s', '30s', '1m', '2m', '3m', '5m', '10m', '15m', '30m',
        '1h', '2h', '4h', '6h', '12h', '1d', '1w', '1mo'));
END
$migration$;

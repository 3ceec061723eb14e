-- depends: 0011_backfill
-- Rollups freeze only what retention really removed. `last_cutoff` stays the upper end
-- of the frozen range (the cutoff of the last retention run that removed rows);
-- `frozen_from` is its lower end: the oldest row any retention run removed. Buckets in
-- [frozen_from, last_cutoff) are never recomputed by a refresh (only by an explicit
-- rebuild); history older than `frozen_from` rolls up like any other data.
-- NULL with a non-NULL last_cutoff (a watermark set before this column existed) means
-- "unknown": everything before last_cutoff stays frozen, as before.
-- Idempotent; plain SQL for Postgres 15 and TimescaleDB alike.
ALTER TABLE store_retention_policies ADD COLUMN IF NOT EXISTS frozen_from timestamptz;

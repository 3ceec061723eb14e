ALTER TABLE store_backfill_checkpoints DROP COLUMN IF EXISTS fanout_group;
DROP INDEX IF EXISTS store_jobs_parent;

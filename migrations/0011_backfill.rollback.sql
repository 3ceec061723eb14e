DROP TABLE IF EXISTS store_backfill_checkpoints;

ALTER TABLE store_retention_policies DROP COLUMN IF EXISTS frozen_from;

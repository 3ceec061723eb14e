-- Undo 0004_retention_policies.
DROP TABLE IF EXISTS store_retention_policies;

DROP TABLE IF EXISTS store_schedules;
DROP TABLE IF EXISTS store_idempotency;
DROP TABLE IF EXISTS store_jobs;

ALTER TABLE store_schedules DROP COLUMN IF EXISTS updated_at;
ALTER TABLE store_schedules DROP COLUMN IF EXISTS paused;
ALTER TABLE store_schedules DROP COLUMN IF EXISTS every;
ALTER TABLE store_schedules DROP COLUMN IF EXISTS params;
ALTER TABLE store_schedules DROP COLUMN IF EXISTS job;
DROP INDEX IF EXISTS store_jobs_page;
ALTER TABLE store_jobs DROP COLUMN IF EXISTS retry_of;

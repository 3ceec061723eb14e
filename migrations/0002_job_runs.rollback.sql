DROP VIEW IF EXISTS job_runs_summary;
DROP TABLE IF EXISTS job_runs;

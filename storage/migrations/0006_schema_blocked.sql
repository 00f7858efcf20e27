-- Saves refused because Antenna's schema changed (issue 17): the run's results wait in the inbox;
-- what the database said is kept here until a save succeeds again, for `antenna-jobs status` and
-- /metrics. Per run: a new run of the job starts unblocked.
ALTER TABLE job_runs ADD COLUMN schema_error text;
ALTER TABLE job_runs ADD COLUMN schema_error_since timestamptz;

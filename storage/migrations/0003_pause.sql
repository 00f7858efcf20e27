-- Pause (issue 11): a paused run hands out no tasks; results already in flight are still saved.
-- Per run: a new run of the job (retry) starts unpaused.
ALTER TABLE job_runs ADD COLUMN paused_at timestamptz;
-- Set once collect has materialised this run's image set: a retried collect attempt of a
-- failed-only retry must not re-read the set it already replaced.
ALTER TABLE job_runs ADD COLUMN collected_at timestamptz;

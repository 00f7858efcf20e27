-- Pause and resume requests made through our API or CLI, counted per run (issue 21). The API
-- writes the new state, then signals the workflow with the request's number; the workflow's
-- set_paused activity then applies the signal only if no newer request was made meanwhile, so a
-- resume signal handled late can no longer undo the pause that followed it. Additive: a running
-- older release ignores the column.
ALTER TABLE job_runs ADD COLUMN pause_requests bigint NOT NULL DEFAULT 0;

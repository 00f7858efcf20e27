-- When a processing worker last asked for tasks (POST /jobs/{id}/tasks/) of a job of each pipeline:
-- written by the API (at most every few seconds per pipeline and API process), read by the
-- aggregators' per-interval watch (a job whose pipeline nobody polls is "waiting for workers"),
-- by /metrics and by `antenna-jobs status`. No foreign key to Antenna's ml_pipeline.
CREATE TABLE pipeline_polls (
    pipeline_id bigint PRIMARY KEY,
    polled_at timestamptz NOT NULL DEFAULT now()
);

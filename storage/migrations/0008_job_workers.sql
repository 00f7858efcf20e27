-- Which processing workers serve each job run (issue 19 item 5). Written by the API in batches
-- (each API process aggregates its /tasks/ and /result/ calls in memory and upserts them every
-- few seconds, api/worker_tally.py); read by the aggregators' per-interval watch, the job
-- detail, `antenna-jobs status` and /metrics. A worker is the token's user plus what the client
-- says of itself (client_info's name, else its address) and its User-Agent. Additive: a running
-- older release ignores both tables and the column.
CREATE TABLE job_workers (
    job_id bigint NOT NULL,
    run_id text NOT NULL,
    worker text NOT NULL,
    user_id bigint NOT NULL,
    user_email text NOT NULL DEFAULT '',
    address text NOT NULL DEFAULT '',
    user_agent text NOT NULL DEFAULT '',
    client_info jsonb,
    first_call timestamptz NOT NULL DEFAULT now(),
    last_call timestamptz NOT NULL DEFAULT now(),
    task_calls bigint NOT NULL DEFAULT 0,
    tasks bigint NOT NULL DEFAULT 0,
    result_calls bigint NOT NULL DEFAULT 0,
    results bigint NOT NULL DEFAULT 0,
    -- Results posted since recent_since: the worker's recent throughput (the window restarts
    -- once it is older than a few minutes).
    recent_results bigint NOT NULL DEFAULT 0,
    recent_since timestamptz NOT NULL DEFAULT now(),
    -- The job log said this worker is idle; a new call clears it.
    idle_noted boolean NOT NULL DEFAULT false,
    PRIMARY KEY (job_id, run_id, worker)
);
-- The processing service name each token's user registered (POST /projects/{id}/pipelines/),
-- per client address: how a worker is named when it sends no client_info.
CREATE TABLE registered_services (
    user_id bigint NOT NULL,
    address text NOT NULL,
    name text NOT NULL,
    registered_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (user_id, address)
);
-- The W3C trace context (traceparent) of the job run's span, when tracing is on (issue 19 item
-- 4): the API starts its /tasks/ and /result/ spans and the aggregator its save spans under it,
-- since the ADC sends no trace headers.
ALTER TABLE job_runs ADD COLUMN trace_context text;

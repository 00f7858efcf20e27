-- antenna-jobs' own tables, in a schema of their own (settings.database.jobs_schema). Antenna's
-- tables (jobs_job, main_sourceimage, ...) are never altered: no foreign keys point at them
-- (a foreign key would add triggers to Django's tables and block its deletes).

-- The run that owns a job now, and its counters. start_job writes the row when a workflow run
-- takes the job (a new run resets the counters); every batch of results updates the counters in
-- its own transaction, so they are exact after any crash.
CREATE TABLE job_runs (
    job_id bigint PRIMARY KEY,
    run_id text NOT NULL,
    -- The run's durable consumer: an ack subject of another run names another consumer, so a
    -- late result of an earlier run can never ack this run's messages.
    consumer text NOT NULL,
    started_at timestamptz NOT NULL DEFAULT now(),
    total integer NOT NULL DEFAULT 0,
    processed integer NOT NULL DEFAULT 0,
    failed integer NOT NULL DEFAULT 0,
    detections integer NOT NULL DEFAULT 0,
    classifications integer NOT NULL DEFAULT 0,
    updated_at timestamptz NOT NULL DEFAULT now()
);

-- A job's image set, materialised by collect; ordinal is the publish order (keyset pagination).
CREATE TABLE job_images (
    job_id bigint NOT NULL,
    ordinal integer NOT NULL,
    source_image_id bigint NOT NULL,
    status text NOT NULL DEFAULT 'pending' CHECK (status IN ('pending', 'processed', 'failed')),
    error text,
    updated_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (job_id, ordinal),
    UNIQUE (job_id, source_image_id)
);
CREATE INDEX job_images_pending_idx ON job_images (job_id) WHERE status = 'pending';

-- Results posted by workers, stored before their task is acked; the aggregator drains it.
CREATE TABLE result_inbox (
    id bigserial PRIMARY KEY,
    job_id bigint NOT NULL,
    image_id bigint,
    reply_subject text NOT NULL,
    is_error boolean NOT NULL,
    payload jsonb NOT NULL,
    -- Saves of this row that failed; past a bound its image is failed with the reason.
    attempts integer NOT NULL DEFAULT 0,
    last_error text,
    received_at timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX result_inbox_job_idx ON result_inbox (job_id, id);
-- Payloads reach 100+ MB per post (full score and logit arrays): stored uncompressed, since
-- compressing float text is slow and buys little, and the aggregator reads each row once.
ALTER TABLE result_inbox ALTER COLUMN payload SET STORAGE EXTERNAL;

-- What antenna-jobs knows of the Antenna tokens it made: a name and an optional expiry (Antenna's
-- authtoken_token has neither). Only a hash of the key is kept here.
CREATE TABLE token_meta (
    key_hash text PRIMARY KEY,
    user_id bigint NOT NULL,
    name text NOT NULL,
    expires_at timestamptz,
    created_at timestamptz NOT NULL DEFAULT now()
);

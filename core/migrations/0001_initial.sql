-- antenna-jobs initial schema: Antenna's domain tables that jobs touch, plus the job machinery.

CREATE TABLE projects (
    id bigserial PRIMARY KEY,
    name text NOT NULL,
    -- Antenna's project.feature_flags.async_pipeline_workers (default on since antenna#1353).
    async_pipeline_workers boolean NOT NULL DEFAULT true,
    reprocess_all_images boolean NOT NULL DEFAULT false,
    created_at timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE deployments (
    id bigserial PRIMARY KEY,
    project_id bigint NOT NULL REFERENCES projects (id) ON DELETE CASCADE,
    name text NOT NULL
);

CREATE TABLE algorithms (
    id bigserial PRIMARY KEY,
    key text NOT NULL UNIQUE,
    name text NOT NULL,
    task_type text NOT NULL DEFAULT 'detection',
    version integer NOT NULL DEFAULT 1,
    description text NOT NULL DEFAULT '',
    category_map jsonb
);

CREATE TABLE pipelines (
    id bigserial PRIMARY KEY,
    slug text NOT NULL UNIQUE,
    name text NOT NULL,
    version integer NOT NULL DEFAULT 1,
    description text NOT NULL DEFAULT '',
    -- Default request config (e.g. request_source_image_batch_size for SYNC_API).
    config jsonb NOT NULL DEFAULT '{}'::jsonb,
    created_at timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE pipeline_algorithms (
    pipeline_id bigint NOT NULL REFERENCES pipelines (id) ON DELETE CASCADE,
    algorithm_id bigint NOT NULL REFERENCES algorithms (id) ON DELETE CASCADE,
    PRIMARY KEY (pipeline_id, algorithm_id)
);

CREATE TABLE project_pipelines (
    project_id bigint NOT NULL REFERENCES projects (id) ON DELETE CASCADE,
    pipeline_id bigint NOT NULL REFERENCES pipelines (id) ON DELETE CASCADE,
    config jsonb NOT NULL DEFAULT '{}'::jsonb,
    PRIMARY KEY (project_id, pipeline_id)
);

CREATE TABLE processing_services (
    id bigserial PRIMARY KEY,
    name text NOT NULL UNIQUE,
    -- NULL: a pull-mode (async) service; otherwise a push-mode (sync) service's URL.
    endpoint_url text,
    last_seen timestamptz,
    last_seen_live boolean NOT NULL DEFAULT false,
    created_at timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE processing_service_projects (
    processing_service_id bigint NOT NULL REFERENCES processing_services (id) ON DELETE CASCADE,
    project_id bigint NOT NULL REFERENCES projects (id) ON DELETE CASCADE,
    PRIMARY KEY (processing_service_id, project_id)
);

CREATE TABLE processing_service_pipelines (
    processing_service_id bigint NOT NULL REFERENCES processing_services (id) ON DELETE CASCADE,
    pipeline_id bigint NOT NULL REFERENCES pipelines (id) ON DELETE CASCADE,
    PRIMARY KEY (processing_service_id, pipeline_id)
);

CREATE TABLE source_images (
    id bigserial PRIMARY KEY,
    project_id bigint NOT NULL REFERENCES projects (id) ON DELETE CASCADE,
    deployment_id bigint REFERENCES deployments (id) ON DELETE SET NULL,
    url text,
    timestamp timestamptz,
    created_at timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX source_images_project_idx ON source_images (project_id);

CREATE TABLE collections (
    id bigserial PRIMARY KEY,
    project_id bigint NOT NULL REFERENCES projects (id) ON DELETE CASCADE,
    name text NOT NULL,
    method text NOT NULL DEFAULT 'manual',
    params jsonb NOT NULL DEFAULT '{}'::jsonb,
    created_at timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE collection_images (
    collection_id bigint NOT NULL REFERENCES collections (id) ON DELETE CASCADE,
    source_image_id bigint NOT NULL REFERENCES source_images (id) ON DELETE CASCADE,
    PRIMARY KEY (collection_id, source_image_id)
);

CREATE TABLE jobs (
    id bigserial PRIMARY KEY,
    name text NOT NULL,
    project_id bigint NOT NULL REFERENCES projects (id) ON DELETE CASCADE,
    pipeline_id bigint REFERENCES pipelines (id) ON DELETE SET NULL,
    collection_id bigint REFERENCES collections (id) ON DELETE SET NULL,
    job_type text NOT NULL DEFAULT 'ml',
    dispatch_mode text NOT NULL DEFAULT 'internal'
        CHECK (dispatch_mode IN ('internal', 'sync_api', 'async_api')),
    status text NOT NULL DEFAULT 'CREATED' CHECK (status IN (
        'CREATED', 'PENDING', 'STARTED', 'SUCCESS', 'FAILURE', 'RETRY', 'CANCELING',
        'REVOKED', 'RECEIVED', 'UNKNOWN')),
    progress jsonb NOT NULL DEFAULT '{}'::jsonb,
    params jsonb NOT NULL DEFAULT '{}'::jsonb,
    result jsonb,
    "limit" integer CHECK ("limit" IS NULL OR "limit" >= 0),
    shuffle boolean NOT NULL DEFAULT true,
    created_at timestamptz NOT NULL DEFAULT now(),
    updated_at timestamptz NOT NULL DEFAULT now(),
    scheduled_at timestamptz,
    started_at timestamptz,
    finished_at timestamptz
);
CREATE INDEX jobs_status_idx ON jobs (status);

CREATE TABLE job_logs (
    id bigserial PRIMARY KEY,
    job_id bigint NOT NULL REFERENCES jobs (id) ON DELETE CASCADE,
    created_at timestamptz NOT NULL DEFAULT now(),
    level text NOT NULL DEFAULT 'INFO',
    message text NOT NULL,
    context jsonb NOT NULL DEFAULT '{}'::jsonb
);
CREATE INDEX job_logs_job_idx ON job_logs (job_id, id DESC);

-- A job's image set, materialised by collect; ordinal is the publish order (keyset pagination).
CREATE TABLE job_images (
    job_id bigint NOT NULL REFERENCES jobs (id) ON DELETE CASCADE,
    ordinal integer NOT NULL,
    source_image_id bigint NOT NULL REFERENCES source_images (id) ON DELETE CASCADE,
    status text NOT NULL DEFAULT 'pending' CHECK (status IN ('pending', 'processed', 'failed')),
    error text,
    updated_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (job_id, ordinal),
    UNIQUE (job_id, source_image_id)
);
CREATE INDEX job_images_pending_idx ON job_images (job_id) WHERE status = 'pending';

CREATE TABLE detections (
    id bigserial PRIMARY KEY,
    source_image_id bigint NOT NULL REFERENCES source_images (id) ON DELETE CASCADE,
    job_id bigint REFERENCES jobs (id) ON DELETE SET NULL,
    algorithm_id bigint NOT NULL REFERENCES algorithms (id),
    -- A NULL bbox is Antenna's "processed, nothing found" marker.
    bbox_x1 real,
    bbox_y1 real,
    bbox_x2 real,
    bbox_y2 real,
    inference_time real,
    timestamp timestamptz,
    crop_image_url text,
    created_at timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX detections_image_idx ON detections (source_image_id, algorithm_id);
CREATE INDEX detections_job_idx ON detections (job_id);

CREATE TABLE classifications (
    id bigserial PRIMARY KEY,
    detection_id bigint NOT NULL REFERENCES detections (id) ON DELETE CASCADE,
    algorithm_id bigint NOT NULL REFERENCES algorithms (id),
    taxon text NOT NULL,
    labels text[],
    scores real[] NOT NULL DEFAULT '{}',
    logits real[],
    inference_time real,
    terminal boolean NOT NULL DEFAULT true,
    timestamp timestamptz,
    created_at timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX classifications_detection_idx ON classifications (detection_id);

-- Results posted by workers, stored before their task is acked; the aggregator drains it.
CREATE TABLE result_inbox (
    id bigserial PRIMARY KEY,
    job_id bigint NOT NULL REFERENCES jobs (id) ON DELETE CASCADE,
    image_id bigint,
    reply_subject text NOT NULL,
    is_error boolean NOT NULL,
    payload jsonb NOT NULL,
    received_at timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX result_inbox_job_idx ON result_inbox (job_id, id);

CREATE TABLE api_tokens (
    id bigserial PRIMARY KEY,
    name text NOT NULL,
    key_hash text NOT NULL UNIQUE,
    created_at timestamptz NOT NULL DEFAULT now(),
    last_used_at timestamptz
);

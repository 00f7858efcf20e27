"""Settings from the environment, one class per concern, defaults on the local services.

Environment names: ``ANTENNA_JOBS_DATABASE_URL``, ``ANTENNA_JOBS_REDIS_URL``,
``ANTENNA_JOBS_NATS_URL``, ``ANTENNA_JOBS_TEMPORAL_ADDRESS``, ``ANTENNA_JOBS_TEMPORAL_NAMESPACE``,
``ANTENNA_JOBS_TASK_QUEUE`` and the others below. Durations take ``5``, ``"5s"`` or ``"2m"``.
"""

from __future__ import annotations

import json
import os
from datetime import timedelta
from pathlib import Path
from typing import Any

from pydantic import Field, SecretStr, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from core.durations import Duration
from core.errors import BrokerNotConfigured
from core.naming import Names

_OTLP_ENDPOINT_ENV = ("OTEL_EXPORTER_OTLP_ENDPOINT", "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT")


class DatabaseSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="ANTENNA_JOBS_DATABASE_", populate_by_name=True)

    url: str = "postgresql://postgres@127.0.0.1:5432/test"
    # Where Antenna's tables are (Django's schema: public). On a bare database `db migrate`
    # creates the ones antenna-jobs uses there. Tests isolate themselves in schemas of their own.
    schema_name: str = Field(default="public", validation_alias="ANTENNA_JOBS_DATABASE_SCHEMA")
    # Tables that are antenna-jobs' alone (a job's image set, the result inbox, run state).
    jobs_schema: str = Field(
        default="antenna_jobs", validation_alias="ANTENNA_JOBS_DATABASE_JOBS_SCHEMA"
    )
    pool_min_size: int = 1
    pool_max_size: int = 10


class RedisSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="ANTENNA_JOBS_REDIS_")

    url: str = "redis://127.0.0.1:6379/0"
    # Derived job state is rebuilt from Postgres when missing; the TTL only bounds leaks.
    key_ttl: Duration = timedelta(days=7)


class NatsSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="ANTENNA_JOBS_NATS_")

    url: str = "nats://127.0.0.1:4222"
    ack_wait: Duration = timedelta(seconds=300)
    max_deliver: int = 2
    max_ack_pending: int = 1000
    # Long enough that a retried publish attempt is still deduplicated by Nats-Msg-Id.
    duplicate_window: Duration = timedelta(hours=2)
    stream_max_age: Duration = timedelta(days=1)
    publish_window: int = 2048
    # A publish waiting this long for JetStream's PubAck is an outage (retried from the
    # checkpoint; Nats-Msg-Id drops what was stored).
    publish_ack_timeout: Duration = timedelta(seconds=30)
    fetch_timeout: Duration = timedelta(seconds=0.5)
    request_timeout: Duration = timedelta(seconds=10)


class TemporalSettings(BaseSettings):
    """Where Temporal is and how to reach it. Temporal's own client configuration is read too
    (``temporalio.envconfig``: the ``TEMPORAL_*`` variables and a profile of its TOML file); a
    value set here explicitly wins over it (core/temporal_client.py)."""

    model_config = SettingsConfigDict(env_prefix="ANTENNA_JOBS_TEMPORAL_")

    address: str = "127.0.0.1:7233"
    namespace: str = "default"
    ui_url: str = "http://127.0.0.1:8233"
    # A profile of Temporal's client configuration file (TEMPORAL_CONFIG_FILE, by default
    # ~/.config/temporalio/temporal.toml); unset: TEMPORAL_PROFILE, else "default".
    profile: str | None = None
    # Temporal Cloud's API key (implies TLS).
    api_key: SecretStr | None = None
    # TLS: on by itself, or by any of the files below; mutual TLS with a client certificate and
    # key; the server's CA when it is not a public one; the name its certificate carries.
    tls: bool | None = None
    tls_ca_path: Path | None = None
    tls_cert_path: Path | None = None
    tls_key_path: Path | None = None
    tls_server_name: str | None = None


class JobSettings(BaseSettings):
    """Task queues and the knobs of the job workflow's activities."""

    model_config = SettingsConfigDict(env_prefix="ANTENNA_JOBS_")

    task_queue: str = "antenna-jobs"
    # Prefix of stream, consumer and Redis key names, for deployments that share a NATS or a
    # Redis; "" gives Antenna's own names (its NATS clean-up of a cancelled job then reaches us).
    name_prefix: str = ""
    # Long-running activities get their own queue so they never hold short activities' slots.
    aggregate_task_queue: str | None = None
    heartbeat_timeout: Duration = timedelta(seconds=10)
    heartbeat_interval: Duration = timedelta(seconds=2)
    # Attempt timeout of the short activities (status writes, queue set-up): also how long a job
    # waits before retrying one whose worker died mid-attempt (they do not heartbeat).
    short_activity_timeout: Duration = timedelta(minutes=1)
    progress_interval: Duration = timedelta(seconds=1)
    aggregate_batch_size: int = 500
    # Batches of one job saved at once while its inbox has a backlog (each claims rows the
    # others skip): one batch's Python runs while PostgreSQL executes another's statements.
    aggregate_lanes: int = Field(default=2, ge=1)
    # Nothing moved for this long with every task delivered: the rest is counted failed.
    stall_period: Duration = timedelta(minutes=15)
    # No processing worker asked for tasks of the job's pipeline for this long: the job says it
    # is waiting for workers (progress and log). Its undelivered tasks never count as stalled.
    workers_seen_window: Duration = timedelta(minutes=2)
    # A worker of a job that has made no call for this long is said idle in the job's log (once,
    # until it calls again); it no longer counts as serving the job after workers_seen_window.
    worker_idle_after: Duration = timedelta(minutes=10)
    # A waiting job's row gets a new updated_at this often: Antenna's reaper (jobs.health_check,
    # if it still runs) revokes a running job whose row is 10 minutes old.
    touch_interval: Duration = timedelta(minutes=2)
    # Sessions' and stations' cached counts are refreshed this often while a job saves results.
    counts_interval: Duration = timedelta(minutes=1)
    failure_threshold: float = 0.5
    publish_page_size: int = 1000
    # Saves refused because Antenna's schema changed are tried again after 1 s, 2 s, 4 s, ...,
    # at most this far apart, until the schema is compatible (the results wait in the inbox).
    schema_retry_max: Duration = timedelta(seconds=60)
    # The worker checks Antenna's schema against the manifest this often (and after a refusal).
    schema_check_interval: Duration = timedelta(minutes=10)

    @property
    def long_task_queue(self) -> str:
        return self.aggregate_task_queue or f"{self.task_queue}-aggregate"

    @property
    def names(self) -> Names:
        return Names(self.name_prefix)

    @field_validator("name_prefix")
    @classmethod
    def _valid_prefix(cls, value: str) -> str:
        Names(value)
        return value


class FairShareSettings(BaseSettings):
    """Fair share of the workers across projects (and, within a project, across its jobs).

    A job whose project holds more than its share of the tasks in flight (by weight, among the
    projects with work) while another project's job waits gets ``[]`` from ``/tasks/``, which
    the ADC reads as "done for me" and moves on; the listing puts the least-served jobs first.
    """

    model_config = SettingsConfigDict(env_prefix="ANTENNA_JOBS_FAIR_SHARE_")

    enabled: bool = True
    # Project id -> weight, e.g. '{"12": 3, "15": 0.5}' (JSON); projects not listed weigh
    # default_weight. A project of weight 3 gets three times the tasks in flight of one of 1.
    weights: dict[int, float] = Field(default_factory=dict)
    default_weight: float = Field(default=1.0, gt=0)
    # Tasks in flight per job (NATS consumer info) are read at most this often per API process.
    refresh_interval: Duration = timedelta(seconds=0.5)
    # A waiting job competes only if a worker listed jobs of its pipeline this recently (so a
    # job no worker can serve never holds the others back).
    poll_window: Duration = timedelta(seconds=60)

    @field_validator("weights")
    @classmethod
    def _positive(cls, value: dict[int, float]) -> dict[int, float]:
        bad = [project for project, weight in value.items() if weight <= 0]
        if bad:
            raise ValueError(f"weights must be > 0 (projects {bad})")
        return value

    def weight(self, project_id: int) -> float:
        return self.weights.get(project_id, self.default_weight)


class WorkerSettings(BaseSettings):
    """The worker process: slots of the long task queue, shutdown grace, Prometheus endpoint."""

    model_config = SettingsConfigDict(env_prefix="ANTENNA_JOBS_WORKER_")

    # A waiting aggregator costs a slot but no thread: many slots on the long queue.
    long_queue_slots: int = 500
    short_queue_slots: int = 100
    # In-flight activities may finish (or reach a checkpoint) before a shutdown cancels them.
    graceful_shutdown: Duration = timedelta(seconds=30)
    # How long a workflow task waits for the worker that has the workflow cached before any
    # worker takes it (replaying the short history): after a crash, the job waits this long.
    sticky_timeout: Duration = timedelta(seconds=5)
    # Runs kept in memory between workflow tasks (the SDK's default). 0 makes every workflow task
    # replay its run from the start, as after a restart: the tests' replay profile sets it.
    max_cached_workflows: int = 1000
    # e.g. "0.0.0.0:9464" serves Temporal's worker metrics at /metrics; unset = off.
    metrics_bind: str | None = None
    # e.g. 9100: the worker's own /metrics (prometheus-client): antenna-jobs' figures, and the
    # Temporal SDK's ones too when metrics_bind is set; unset = off.
    metrics_port: int | None = None
    metrics_host: str = "127.0.0.1"


class SyncApiSettings(BaseSettings):
    """SYNC_API jobs: how batches are posted to a push-mode processing service's /process."""

    model_config = SettingsConfigDict(env_prefix="ANTENNA_JOBS_SYNC_")

    connect_timeout: Duration = timedelta(seconds=5)
    # One batch of inference on a remote GPU; a request slower than this counts as failed.
    read_timeout: Duration = timedelta(seconds=120)
    # Extra attempts of a batch after a 5xx, a timeout or a connection error.
    retries: int = Field(default=3, ge=0)
    # Wait before the first retry, doubled for each further one.
    retry_backoff: Duration = timedelta(seconds=1)
    readyz_timeout: Duration = timedelta(seconds=5)


class ExportSettings(BaseSettings):
    """data_export jobs: where the files go and how many rows each database round trip fetches."""

    model_config = SettingsConfigDict(env_prefix="ANTENNA_JOBS_EXPORT_")

    dir: Path = Path("exports")
    batch_size: int = Field(default=2000, ge=1)
    # Where the files are served from (exports_dataexport.file_url is base + file name); unset:
    # a file:// URL of the path.
    url_base: str | None = None


class ReconcileSettings(BaseSettings):
    """The reconcile workflow (Antenna's jobs_health_check) and the Schedule that runs it."""

    model_config = SettingsConfigDict(env_prefix="ANTENNA_JOBS_RECONCILE_")

    # The worker creates a Temporal Schedule with this interval if there is none; 0: no schedule.
    interval: Duration = timedelta(minutes=5)
    # A job row untouched this long whose workflow is closed or missing gets repaired; a younger
    # one may sit between a run/retry request's status write and its workflow start.
    grace: Duration = timedelta(minutes=1)
    # job_N streams whose job does not exist here are removed once this old (NATS may be shared).
    zombie_age: Duration = timedelta(hours=1)


class ApiSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="ANTENNA_JOBS_API_")

    host: str = "127.0.0.1"
    port: int = 8000
    url: str = "http://127.0.0.1:8000"
    token: str | None = None
    log_lines: int = 50
    # Request bodies past this are answered 413 before they are read (Content-Length) or as soon
    # as the stream passes it. The ADC posts 110-150 MB per 24-image batch of the moths model.
    max_body_bytes: int = Field(default=256 * 1024 * 1024, ge=1)
    # API processes sharing the port (`antenna-jobs api --workers N`).
    workers: int = Field(default=1, ge=1)
    # e.g. "127.0.0.1:9465": the Temporal SDK's metrics of the API's client, served there and
    # passed on by the API's /metrics; unset = off. Only with workers = 1 (one port, one process).
    temporal_metrics_bind: str | None = None
    # /metrics answers "Authorization: Token <this>" (a scrape secret for Prometheus, which may
    # do nothing else) or a superuser's Antenna token; anything else is 401/403. It names every
    # running job with its project and pipeline, draft projects' included.
    metrics_token: str | None = None
    # /docs, /redoc and /openapi.json: off unless asked for (they map every endpoint for anyone
    # who can reach the port, and the ADC needs none of them).
    docs: bool = False


class AntennaSettings(BaseSettings):
    """Antenna's own Celery broker: the ``bridge`` consumes its run_job messages, crop tasks
    (create_detection_images) are published to it for Antenna's worker, and so is the run_job of
    every job type that is not ml (AntennaTaskWorkflow)."""

    model_config = SettingsConfigDict(env_prefix="ANTENNA_JOBS_ANTENNA_")

    # e.g. amqp://guest:guest@127.0.0.1:5672//; unset: no bridge, no crop tasks.
    broker_url: str | None = None
    jobs_queue: str = "jobs"
    results_queue: str = "ml_results"
    # Antenna's Django cache (Redis); not used by the bridge.
    cache_url: str | None = None
    # run_job messages handed out by the broker at once (the bridge's in-flight starts, at most).
    prefetch: int = Field(default=10, ge=1)
    # A run_job message whose start failed waits this long in a retry queue, doubled with each
    # attempt, up to the max; also the wait between broker reconnects.
    retry_backoff: Duration = timedelta(seconds=1)
    retry_backoff_max: Duration = timedelta(seconds=30)
    # Attempts in all for a message whose start fails for a reason that will not pass by itself
    # (a row the bridge cannot read, a validation error): then it goes to the dead-letter queue.
    # Temporal or Postgres unreachable is retried for as long as it lasts.
    max_attempts: int = Field(default=5, ge=1)
    connect_timeout: Duration = timedelta(seconds=5)
    # RabbitMQ's management API (its plugin), e.g. http://guest:guest@127.0.0.1:15672: the bridge
    # names the connections of other consumers of the jobs queue (AMQP only counts them).
    management_url: str | None = None
    # How often the bridge reads the queues' figures and writes its report (bridge_reports).
    report_interval: Duration = timedelta(seconds=5)
    # Job types other than ml run Antenna's own code (its run_job task, sent here for the
    # Antenna Celery worker that consumes this queue: its general one by default).
    task_queue: str = "antenna"
    # A running task's row is read this often at first, the wait growing to the max.
    task_poll_interval: Duration = timedelta(seconds=1)
    task_poll_max: Duration = timedelta(seconds=15)
    # How long a control request (revoke, "which worker has this task?") waits for replies.
    control_timeout: Duration = timedelta(seconds=1)
    # Workers answered and none had the task, its queue held nothing waiting and the row did
    # not change for this long: the task is lost (its worker died; run_job is acked on
    # delivery) and is sent again, at most task_max_sends times in all.
    task_lost_after: Duration = timedelta(minutes=5)
    task_max_sends: int = Field(default=3, ge=1)

    def require_broker_url(self) -> str:
        """The broker's URL, where one is needed (BrokerNotConfigured if it is not set)."""
        if self.broker_url is None:
            raise BrokerNotConfigured()
        return self.broker_url

    @property
    def runs_antenna_tasks(self) -> bool:
        """Antenna mode: job types other than ml run Antenna's own code on its Celery worker
        (standalone, without a broker, populate and export run our own implementations)."""
        return self.broker_url is not None


class TracingSettings(BaseSettings):
    """OpenTelemetry traces (core/tracing.py): off unless an OTLP endpoint is configured."""

    model_config = SettingsConfigDict(env_prefix="ANTENNA_JOBS_TRACING_")

    # None: on exactly when an OTLP endpoint is set (here or by OTEL_EXPORTER_OTLP_ENDPOINT).
    enabled: bool | None = None
    # OTLP over HTTP, e.g. http://collector:4318 (spans go to its /v1/traces).
    endpoint: str | None = None

    @property
    def on(self) -> bool:
        if self.enabled is not None:
            return self.enabled
        return bool(self.endpoint) or any(os.environ.get(name) for name in _OTLP_ENDPOINT_ENV)


class Settings(BaseSettings):
    """Everything a process needs, built once in its entry point and passed down."""

    database: DatabaseSettings = Field(default_factory=DatabaseSettings)
    redis: RedisSettings = Field(default_factory=RedisSettings)
    nats: NatsSettings = Field(default_factory=NatsSettings)
    temporal: TemporalSettings = Field(default_factory=TemporalSettings)
    jobs: JobSettings = Field(default_factory=JobSettings)
    api: ApiSettings = Field(default_factory=ApiSettings)
    fair_share: FairShareSettings = Field(default_factory=FairShareSettings)
    worker: WorkerSettings = Field(default_factory=WorkerSettings)
    sync: SyncApiSettings = Field(default_factory=SyncApiSettings)
    export: ExportSettings = Field(default_factory=ExportSettings)
    reconcile: ReconcileSettings = Field(default_factory=ReconcileSettings)
    antenna: AntennaSettings = Field(default_factory=AntennaSettings)
    tracing: TracingSettings = Field(default_factory=TracingSettings)


def _env_value(value: Any) -> str:
    if isinstance(value, SecretStr):
        return value.get_secret_value()
    if isinstance(value, timedelta):
        return f"{value.total_seconds()}s"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, dict | list):
        return json.dumps(value)
    return str(value)


def settings_env(settings: Settings) -> dict[str, str]:
    """Every setting as the environment variable a child process's Settings() reads back (so a
    worker or API subprocess runs with exactly these settings)."""
    env: dict[str, str] = {}
    for name in Settings.model_fields:
        group = getattr(settings, name)
        assert isinstance(group, BaseSettings)
        prefix = str(type(group).model_config.get("env_prefix", ""))
        for field_name, field in type(group).model_fields.items():
            value = getattr(group, field_name)
            if value is None:
                continue
            alias = field.validation_alias
            key = alias if isinstance(alias, str) else f"{prefix}{field_name}".upper()
            env[key] = _env_value(value)
    return env

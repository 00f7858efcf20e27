"""Errors of antenna-jobs, each carrying the fields a caller needs.

Raised in our code (the API maps them to 4xx/5xx):

AntennaJobsError
├── JobNotFound(job_id)
├── InvalidJobState(job_id, status, action)      refused: e.g. run a finished job
├── InvalidJobInput(field, message)              bad create parameters
├── TaskQueueUnavailable(job_id)                 NATS did not answer in time
├── BrokerNotConfigured                          Antenna's broker needed, its URL not set
└── PublishNotAcknowledged(reason)               JetStream refused task messages or did not
                                                 confirm them in time (an outage: retried)

Raised to Temporal, as ApplicationError types (``failure(kind, message)``), by activities and
the job workflows; all but WorkerShutdown are non-retryable: each says something no retry can
change (outages are plain exceptions, retried by the activity retry policy):

Failure
├── JobNotFound              the job row is gone
├── JobCancelled             the job row says CANCELING or REVOKED (cancelled by Antenna's UI)
├── StaleRun                 another run took the job since this attempt began
├── UnsupportedJob           the job's type or dispatch mode is run by another workflow (or none)
├── PipelineNotConfigured    the job's pipeline cannot save results as Antenna does
├── NoLiveService            SYNC_API: no processing service of the pipeline answers /readyz
├── PopulateFailed           populate_captures_collection cannot run (bad sampling, set gone)
├── ExportFailed             data_export cannot write its file or read its params
├── AntennaTaskLost          Antenna's Celery worker lost the job's run_job every time it was sent
├── JobFailed                the job ended FAILURE (the run fails with it, the result attached)
└── WorkerShutdown           the worker is shutting down (a deploy): retried, on another worker
"""

from __future__ import annotations

from enum import StrEnum
from typing import Any

from temporalio.exceptions import ApplicationError


class Failure(StrEnum):
    JOB_NOT_FOUND = "JobNotFound"
    JOB_CANCELLED = "JobCancelled"
    STALE_RUN = "StaleRun"
    UNSUPPORTED_JOB = "UnsupportedJob"
    PIPELINE_NOT_CONFIGURED = "PipelineNotConfigured"
    NO_LIVE_SERVICE = "NoLiveService"
    POPULATE_FAILED = "PopulateFailed"
    EXPORT_FAILED = "ExportFailed"
    ANTENNA_TASK_LOST = "AntennaTaskLost"
    JOB_FAILED = "JobFailed"
    # The worker is shutting down (a deploy): the activity is retried on another worker.
    WORKER_SHUTDOWN = "WorkerShutdown"


# Failure types a retry can fix (outages are raised as plain exceptions).
RETRYABLE: frozenset[Failure] = frozenset({Failure.WORKER_SHUTDOWN})


def failure(kind: Failure, message: str, *details: Any) -> ApplicationError:
    """The ApplicationError of ``kind``, retryable as the tree above says."""
    return ApplicationError(message, *details, type=kind.value, non_retryable=kind not in RETRYABLE)


class AntennaJobsError(Exception):
    """Base of every error this project raises on purpose."""


class JobNotFound(AntennaJobsError):
    def __init__(self, job_id: int) -> None:
        super().__init__(f"job {job_id} does not exist")
        self.job_id = job_id


class InvalidJobState(AntennaJobsError):
    def __init__(self, job_id: int, status: str, action: str) -> None:
        super().__init__(f"cannot {action} job {job_id}: it is {status}")
        self.job_id = job_id
        self.status = status
        self.action = action


class InvalidJobInput(AntennaJobsError):
    def __init__(self, field: str, message: str) -> None:
        super().__init__(f"{field}: {message}")
        self.field = field
        self.message = message


class PublishNotAcknowledged(AntennaJobsError):
    def __init__(self, reason: str) -> None:
        super().__init__(f"task messages not stored by JetStream: {reason}")
        self.reason = reason


class BrokerNotConfigured(AntennaJobsError, ValueError):
    """The bridge, its dead letters or Antenna's Celery tasks need Antenna's broker, and
    ANTENNA_JOBS_ANTENNA_BROKER_URL is not set (``AntennaSettings.require_broker_url``)."""

    def __init__(self) -> None:
        super().__init__(
            "set ANTENNA_JOBS_ANTENNA_BROKER_URL to Antenna's Celery broker (amqp://...)"
        )


class TaskQueueUnavailable(AntennaJobsError):
    def __init__(self, job_id: int) -> None:
        super().__init__(f"task queue of job {job_id} is temporarily unavailable")
        self.job_id = job_id

"""Inputs, outputs and heartbeat checkpoints of the job activities.

Imported by the workflow (through ``imports_passed_through``), so it holds pydantic models only:
no drivers, no I/O. One model per activity input so fields can be added later.
"""

from __future__ import annotations

from datetime import timedelta
from enum import StrEnum
from typing import Any, Self

from pydantic import BaseModel, Field, NonNegativeInt

from core.counters import AggregateCounters
from core.settings import JobSettings
from core.states import JobState, JobType


class JobRef(BaseModel):
    job_id: int


class RunInput(JobRef):
    """A run activity's input (publish, aggregate, the sync batches): its job and image count."""

    total: NonNegativeInt


class Checkpoint(BaseModel):
    """Heartbeat details of a run activity: everything up to last_ordinal is done (a retried
    attempt resumes after it)."""

    last_ordinal: NonNegativeInt = 0


class StartInput(JobRef):
    """start_job's input: the workflow type asking, checked against the job's type and mode.
    A payload of a plain JobRef (an older run) reads as the async ML JobWorkflow."""

    workflow: str = "JobWorkflow"


class JobConfig(BaseModel):
    """The settings workflow code needs; it cannot read the environment, so start_job sends them."""

    long_task_queue: str
    heartbeat_timeout: timedelta
    failure_threshold: float
    short_timeout: timedelta = timedelta(minutes=2)

    @classmethod
    def of(cls, jobs: JobSettings) -> JobConfig:
        return cls(
            long_task_queue=jobs.long_task_queue,
            heartbeat_timeout=jobs.heartbeat_timeout,
            failure_threshold=jobs.failure_threshold,
            short_timeout=jobs.short_activity_timeout,
        )


class StartOutcome(StrEnum):
    STARTED = "started"
    # Already SUCCESS/FAILURE/REVOKED: the workflow ends without side effects.
    FINAL = "final"
    # Cancelled before the workflow got to it: clean up and revoke.
    CANCELING = "canceling"


class StartResult(BaseModel):
    outcome: StartOutcome
    status: JobState
    project_id: int
    config: JobConfig
    job_type: JobType = JobType.ML

    @classmethod
    def started(
        cls, status: JobState, project_id: int, jobs: JobSettings, job_type: JobType, **more: Any
    ) -> Self:
        """The answer for a job this run takes, with the settings its workflow uses."""
        return cls(
            outcome=StartOutcome.STARTED,
            status=status,
            project_id=project_id,
            config=JobConfig.of(jobs),
            job_type=job_type,
            **more,
        )


class CollectInput(JobRef):
    """collect_images' input; a payload of a plain JobRef (an older run) reads as a full run."""

    failed_only: bool = False


class PauseInput(JobRef):
    paused: bool
    reason: str
    # The number of the API's request behind the signal (None: a signal sent directly).
    request: int | None = None


class CollectResult(BaseModel):
    total: NonNegativeInt
    # Candidates before the job's limit trimmed them (None when nothing was trimmed).
    candidates: NonNegativeInt


class FinalizeInput(BaseModel):
    job_id: int
    counters: AggregateCounters
    reason: str | None = None


class FinalizeResult(BaseModel):
    status: JobState
    # False when the guarded update found the job no longer finalizable (e.g. CANCELING).
    moved: bool


class FailInput(BaseModel):
    job_id: int
    reason: str


class RevokeInput(BaseModel):
    job_id: int
    reason: str = Field(default="cancelled")


class CancelCheck(BaseModel):
    status: JobState
    cancelling: bool


class SelfCancelInput(BaseModel):
    workflow_id: str
    run_id: str
    reason: str

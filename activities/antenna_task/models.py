"""Inputs and outputs of the activities of AntennaTaskWorkflow. Pydantic only: the workflow
imports this module."""

from __future__ import annotations

from enum import StrEnum

from pydantic import BaseModel, Field

from activities.models import StartResult
from core.states import JobState


class AntennaStartResult(StartResult):
    """start_job's answer, with what the workflow needs of the Antenna settings."""

    max_sends: int = Field(default=3, ge=1)
    task_queue: str = "antenna"


class TaskOutcome(StrEnum):
    SENT = "sent"  # run_job is on its queue (or was, and a worker has it)
    FINAL = "final"  # the row is SUCCESS/FAILURE/REVOKED: nothing (more) to run
    LOST = "lost"  # no worker has the task, nothing waits in its queue, the row stands still


class SendInput(BaseModel):
    job_id: int
    # The task this send replaces (lost); None for the run's first send.
    previous: str | None = None


class SendResult(BaseModel):
    outcome: TaskOutcome
    status: JobState
    task_id: str | None = None


class WaitInput(BaseModel):
    job_id: int
    task_id: str


class WaitResult(BaseModel):
    outcome: TaskOutcome
    status: JobState


class RevokeTaskInput(BaseModel):
    job_id: int
    task_id: str
    reason: str = "cancelled"


class RevokeTaskResult(BaseModel):
    # No worker holds the task any more (it was terminated, or had ended, or never started).
    terminated: bool
    holders: list[str] = Field(default_factory=list)

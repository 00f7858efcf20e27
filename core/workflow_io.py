"""Inputs and outputs of the job workflow, shared by the workflow and whoever starts it.

One model per workflow so fields can be added without breaking running workflows.
"""

from __future__ import annotations

from pydantic import BaseModel

from core.states import JobState


class JobWorkflowInput(BaseModel):
    job_id: int
    # A retry that queues only the images that failed in the previous run.
    failed_only: bool = False


class JobWorkflowResult(BaseModel):
    job_id: int
    status: JobState
    total: int = 0
    processed: int = 0
    failed: int = 0
    reason: str | None = None


class WorkflowProgress(BaseModel):
    """What the ``progress`` query returns: the workflow's phase and the latest known counts."""

    job_id: int
    phase: str = "starting"
    status: JobState = JobState.PENDING
    total: int = 0
    published: int = 0
    processed: int = 0
    failed: int = 0
    detections: int = 0
    classifications: int = 0
    # Paused by the pause signal (or the API): no tasks are handed out until resumed.
    paused: bool = False

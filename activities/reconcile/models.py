"""Inputs and reports of the reconcile workflow and its activities (pydantic only, no I/O)."""

from __future__ import annotations

from pydantic import BaseModel, Field, NonNegativeInt

from core.states import JobState


class ReconcileInput(BaseModel):
    """Empty today; a model so fields can be added without breaking the Schedule's action."""

    page_size: int = Field(default=200, ge=1)


class RepairedJob(BaseModel):
    job_id: int
    from_status: JobState
    to_status: JobState
    reason: str


class JobsReport(BaseModel):
    """Jobs not final (and not CREATED) looked at, and what happened to them."""

    checked: NonNegativeInt = 0
    running: NonNegativeInt = 0
    # Closed or missing workflow, but the row changed too recently to be sure (grace).
    recent: NonNegativeInt = 0
    # Temporal could not tell (unavailable); tried again on the next run.
    unknown: NonNegativeInt = 0
    repaired: list[RepairedJob] = Field(default_factory=list)
    # PENDING jobs with no run (their run_job message never reached the bridge): started here.
    started: list[int] = Field(default_factory=list)


class LeftoversReport(BaseModel):
    streams_checked: NonNegativeInt = 0
    streams_removed: list[str] = Field(default_factory=list)
    redis_jobs_removed: list[int] = Field(default_factory=list)
    inbox_rows_removed: NonNegativeInt = 0
    tokens_removed: NonNegativeInt = 0


class ReconcileReport(BaseModel):
    jobs: JobsReport
    leftovers: LeftoversReport

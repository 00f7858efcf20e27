"""What it takes to create a job: one input model per kind, used by the API, the CLI, the job
actions, the job store and the tests alike (instead of a keyword list repeated through them)."""

from __future__ import annotations

from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field

from core.states import DispatchMode, JobType
from core.wire_types import INT4_MAX


class NewMlJob(BaseModel):
    """An ML job: a pipeline run on a capture collection of the project."""

    # A misspelt option is a caller's bug: refuse it rather than create a different job.
    model_config = ConfigDict(extra="forbid")

    project_id: int
    pipeline_slug: str
    collection_id: int
    name: str | None = None
    # None: the project's default (its async-workers flag), as Antenna chooses.
    dispatch_mode: DispatchMode | None = None
    # Stored in jobs_job."limit", an integer column.
    limit: Annotated[int, Field(ge=0, le=INT4_MAX)] | None = None
    shuffle: bool = True


class NewInternalJob(BaseModel):
    """A populate_captures_collection or data_export job; ``params`` are checked per type."""

    model_config = ConfigDict(extra="forbid")

    job_type: JobType
    project_id: int
    collection_id: int | None = None
    params: dict[str, Any] = Field(default_factory=dict)
    name: str | None = None

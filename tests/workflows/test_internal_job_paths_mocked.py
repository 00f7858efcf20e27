"""The INTERNAL job workflow's own path with every activity mocked by name (as the async ML one's
in test_ml_job_paths_mocked.py): the job type's work, then finish, for populate and export; the
paths every job workflow shares (failure, cancel, finishing after a cancel) are in
test_job_lifecycle_paths_mocked.py. On the session's Temporal dev server with no Postgres; the
real activities are checked end to end by test_internal_jobs.py."""

from __future__ import annotations

import pytest

from activities.internal.models import FinishInput
from core.states import JobState, JobType
from core.workflow_io import JobWorkflowResult
from tests.helpers.mocked_job import progress, start
from tests.helpers.mocked_workflows import PRODUCED, MockedInternalJob


@pytest.mark.parametrize(
    ("job_type", "work"),
    [
        (JobType.POPULATE_CAPTURES_COLLECTION, "populate_collection"),
        (JobType.DATA_EXPORT, "export_data"),
    ],
)
async def test_the_work_then_finish_ends_the_job_in_success(
    internal_job: MockedInternalJob, job_type: JobType, work: str
) -> None:
    internal_job.job_type = job_type
    handle = await start(internal_job)

    result = await handle.result()
    assert result == JobWorkflowResult(job_id=result.job_id, status=JobState.SUCCESS)
    path = ["start_job", work, "check_cancel", "finish_internal_job"]
    if job_type == JobType.DATA_EXPORT:
        path.append("remove_export")  # leftovers only: the finished file stays
        assert [r.keep_final for r in internal_job.inputs("remove_export")] == [True]
    assert internal_job.names() == path
    [finish] = internal_job.inputs("finish_internal_job")
    assert finish == FinishInput(job_id=result.job_id, **PRODUCED.model_dump())
    state = await progress(handle)
    assert (state.phase, state.status) == ("done", JobState.SUCCESS)

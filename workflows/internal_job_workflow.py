"""INTERNAL jobs (populate_captures_collection, data_export): start -> the job type's one
heartbeating activity -> finish (SUCCESS with the job's result). The lifecycle (cancel paths,
failure, revoke) is JobLifecycle's; cleanup removes what an export left unless it succeeded.
"""

from __future__ import annotations

from typing import Never

from temporalio import workflow

with workflow.unsafe.imports_passed_through():
    from activities.internal.data_export import ExportActivities
    from activities.internal.finish import InternalJobActivities
    from activities.internal.models import FinishInput, InternalResult, RemoveExportInput
    from activities.internal.populate_collection import PopulateActivities
    from activities.models import JobRef
    from core import naming
    from core.states import JobType
    from core.workflow_io import JobWorkflowInput, JobWorkflowResult
    from workflows.job_lifecycle import Activity, JobLifecycle

# Each type's phase and activity. The methods belong to different classes (the worker registers an
# instance of each), hence Never for the owner: any activity taking a JobRef and returning an
# InternalResult fits, and mypy checks the call in _work against that.
_WORK: dict[JobType, tuple[str, Activity[Never, JobRef, InternalResult]]] = {
    JobType.POPULATE_CAPTURES_COLLECTION: ("populating", PopulateActivities.populate_collection),
    JobType.DATA_EXPORT: ("exporting", ExportActivities.export_data),
}


@workflow.defn(name=naming.INTERNAL_JOB_WORKFLOW)
class InternalJobWorkflow(JobLifecycle):
    workflow_name = naming.INTERNAL_JOB_WORKFLOW

    @workflow.run
    async def run(self, inp: JobWorkflowInput) -> JobWorkflowResult:
        return await self._run_job()

    async def _work(self) -> JobWorkflowResult:
        assert self._start is not None
        phase, activity = _WORK[self._start.job_type]
        self._set_phase(phase)
        produced: InternalResult = await self._run_phase(activity, self._job)
        await self._check_job()
        self._set_phase("finishing")
        done = await self._run_step(
            InternalJobActivities.finish_internal_job,
            FinishInput(job_id=self._job.job_id, result=produced.result, summary=produced.summary),
            check=False,
        )
        result = JobWorkflowResult(job_id=self._job.job_id, status=done.status)
        return await self._close(done, result, produced.summary)

    async def _cleanup(self) -> None:
        if self._start is not None and self._start.job_type == JobType.DATA_EXPORT:
            await self._run_step(
                ExportActivities.remove_export,
                RemoveExportInput(job_id=self._job.job_id, keep_final=self._finished),
                check=False,
            )

"""The SYNC_API ML job: the job's images posted in batches to a push-mode processing service.

start -> collect -> choose a live service (/readyz) -> process the batches (one heartbeating
activity that saves each answer) -> finalize. The lifecycle (cancel paths, failure, revoke) is
JobLifecycle's, collect and finalize MlJobLifecycle's; there is no queue to clean up.
History is O(1) in images and batches.
"""

from __future__ import annotations

from temporalio import workflow

with workflow.unsafe.imports_passed_through():
    from activities.sync_api.models import ServiceChoice, SyncProcessInput, SyncProcessResult
    from activities.sync_api.process import SyncActivities
    from core import naming
    from core.counters import AggregateCounters
    from core.workflow_io import JobWorkflowInput, JobWorkflowResult
    from workflows.ml_job import MlJobLifecycle


@workflow.defn(name=naming.SYNC_JOB_WORKFLOW)
class SyncJobWorkflow(MlJobLifecycle):
    workflow_name = naming.SYNC_JOB_WORKFLOW

    @workflow.run
    async def run(self, inp: JobWorkflowInput) -> JobWorkflowResult:
        return await self._run_job()

    async def _work(self) -> JobWorkflowResult:
        total = await self._collect()
        if total == 0:
            return await self._finalize(AggregateCounters())
        # Chosen once per run: every batch of this run goes to the same service.
        service: ServiceChoice = await self._run_step(SyncActivities.choose_service, self._job)
        self._set_phase("processing")
        done: SyncProcessResult = await self._run_phase(
            SyncActivities.process_batches,
            SyncProcessInput(job_id=self._job.job_id, total=total, service=service),
        )
        await self._check_job()
        return await self._finalize(done.counters)

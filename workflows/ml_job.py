"""What the two ML job workflows (async_api and sync_api) share on top of JobLifecycle: collecting
the job's images, and the end of an ML run (SUCCESS, or FAILURE when too many images failed)."""

from __future__ import annotations

from temporalio import workflow

with workflow.unsafe.imports_passed_through():
    from activities.images import ImageActivities
    from activities.jobs import JobActivities
    from activities.models import CollectInput, CollectResult, FinalizeInput, FinalizeResult
    from core.counters import AggregateCounters
    from core.workflow_io import JobWorkflowResult
    from workflows.job_lifecycle import JobLifecycle


class MlJobLifecycle(JobLifecycle):
    async def _collect(self) -> int:
        """The images this run processes (a retry: only those not yet done; a failed-only retry:
        those the previous run failed); their count."""
        self._set_phase("collecting")
        collected: CollectResult = await self._run_phase(
            ImageActivities.collect_images,
            CollectInput(job_id=self._job.job_id, failed_only=self._failed_only),
        )
        self._state.total = collected.total
        await self._check_job()
        return collected.total

    async def _finalize(self, counters: AggregateCounters) -> JobWorkflowResult:
        """The final status is decided by finalize_job, from the counters; this only reports it."""
        self._set_phase("finalizing")
        self._set_counts(counters)
        # No cancel check right after: once the job is final, a late cancel no longer applies.
        done: FinalizeResult = await self._run_step(
            JobActivities.finalize_job,
            FinalizeInput(job_id=self._job.job_id, counters=counters),
            check=False,
        )
        result = JobWorkflowResult(
            job_id=self._job.job_id,
            status=done.status,
            total=counters.total,
            processed=counters.processed,
            failed=counters.failed,
        )
        assert self._config is not None
        reason = counters.outcome_line(self._config.failure_threshold)
        return await self._close(done, result, reason)

    def _set_counts(self, counters: AggregateCounters) -> None:
        self._state.total = counters.total
        self._state.processed = counters.processed
        self._state.failed = counters.failed
        self._state.detections = counters.detections
        self._state.classifications = counters.classifications

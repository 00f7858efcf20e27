"""A job whose code is Antenna's (every type but ml in Antenna mode, including types we do not
know): Antenna's ``run_job`` runs on Antenna's Celery worker, this workflow owns its lifecycle.

take the job -> send run_job -> wait for the row to become final -> (the task lost: revoke it,
send again, at most ``max_sends`` times) -> the row's final status is the job's. Progress, logs
and the final status are written by Antenna's code; the cancel paths, failure and revoke are
JobLifecycle's, and cleanup revokes the task with terminate (Antenna's Job.cancel) whenever the
run ends before the row is final. History is O(1): a few activities per send.
"""

from __future__ import annotations

from temporalio import workflow

with workflow.unsafe.imports_passed_through():
    from activities.antenna_task.models import (
        AntennaStartResult,
        RevokeTaskInput,
        SendInput,
        SendResult,
        TaskOutcome,
        WaitInput,
        WaitResult,
    )
    from activities.antenna_task.runner import AntennaTaskActivities
    from activities.models import FinalizeResult, StartInput, StartResult
    from core import naming
    from core.errors import Failure, failure
    from core.states import JobState
    from core.workflow_io import JobWorkflowInput, JobWorkflowResult
    from workflows.job_lifecycle import JobLifecycle


@workflow.defn(name=naming.ANTENNA_TASK_WORKFLOW)
class AntennaTaskWorkflow(JobLifecycle):
    workflow_name = naming.ANTENNA_TASK_WORKFLOW

    @workflow.init
    def __init__(self, inp: JobWorkflowInput) -> None:
        super().__init__(inp)
        self._task_id: str | None = None
        self._max_sends = 1

    @workflow.run
    async def run(self, inp: JobWorkflowInput) -> JobWorkflowResult:
        return await self._run_job()

    async def _take_job(self) -> StartResult:
        """JobLifecycle's start, except that the status stays Antenna's to write."""
        start: AntennaStartResult = await self._run_step(
            AntennaTaskActivities.start_antenna_job,
            StartInput(job_id=self._job.job_id, workflow=self.workflow_name),
        )
        self._max_sends = start.max_sends
        return start

    def _status_once_taken(self, start: StartResult) -> JobState:
        return start.status

    async def _work(self) -> JobWorkflowResult:
        previous: str | None = None
        for _ in range(self._max_sends):
            self._set_phase("sending run_job to Antenna's worker")
            sent: SendResult = await self._run_step(
                AntennaTaskActivities.send_run_job,
                SendInput(job_id=self._job.job_id, previous=previous),
            )
            if sent.outcome == TaskOutcome.FINAL:
                return await self._ended(sent.status)
            self._task_id = sent.task_id
            self._set_status(JobState.STARTED)
            self._set_phase(f"running on Antenna's worker (task {sent.task_id})")
            assert sent.task_id is not None
            waited: WaitResult = await self._run_phase(
                AntennaTaskActivities.wait_for_row,
                WaitInput(job_id=self._job.job_id, task_id=sent.task_id),
            )
            if waited.outcome == TaskOutcome.FINAL:
                return await self._ended(waited.status)
            previous = sent.task_id
        raise failure(
            Failure.ANTENNA_TASK_LOST,
            f"Antenna's Celery worker lost run_job {self._max_sends} times (last task {previous})",
        )

    async def _ended(self, status: JobState) -> JobWorkflowResult:
        """Antenna's code wrote the final status: SUCCESS ends the run, FAILURE fails it,
        REVOKED (Antenna's reaper or cancel) takes the cancel path."""
        result = JobWorkflowResult(job_id=self._job.job_id, status=status)
        done = FinalizeResult(status=status, moved=status != JobState.REVOKED)
        return await self._close(done, result, f"Antenna's run_job ended {status.value}")

    async def _cleanup(self) -> None:
        """A run ending before the row is final (cancel, failure) stops Antenna's task."""
        if self._finished or self._task_id is None:
            return
        reason = workflow.cancellation_reason() or "the job's workflow ended"
        await self._run_step(
            AntennaTaskActivities.revoke_run_job,
            RevokeTaskInput(job_id=self._job.job_id, task_id=self._task_id, reason=reason),
            check=False,
        )

"""The sync ML, internal and Antenna-task job workflows' stand-ins, on top of MockedJob's
(tests/helpers/mocked_job.py): registered under the real activity names, taking and returning
the real models. A long one (a phase) runs until cancelled while its name is in ``hold``, and
fails on a CANCELING row as the real one does (``row_cancelling``)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from temporalio import activity

from activities.antenna_task import models as task
from activities.internal.models import FinishInput, InternalResult, RemoveExportInput
from activities.models import FinalizeResult, JobRef, StartInput
from activities.sync_api.models import ServiceChoice, SyncProcessInput, SyncProcessResult
from core.counters import AggregateCounters
from core.states import JobState, JobType
from tests.helpers.mocked_job import MockedJob, mocked_fixture
from workflows.antenna_task_workflow import AntennaTaskWorkflow
from workflows.internal_job_workflow import InternalJobWorkflow
from workflows.sync_job_workflow import SyncJobWorkflow

SERVICE = ServiceChoice(service_id=7, name="fast", endpoint_url="http://svc", latency=0.01)
PRODUCED = InternalResult(result={"file_url": "http://files/export.json"}, summary="12 records")


@dataclass
class MockedSyncJob(MockedJob):
    """SYNC_API: the service chosen, then the batches processed."""

    processed: AggregateCounters = field(
        default_factory=lambda: AggregateCounters(total=10, processed=10, detections=30)
    )

    def activities(self) -> list[Callable[..., Any]]:
        @activity.defn(name="choose_sync_service")
        async def choose_sync_service(ref: JobRef) -> ServiceChoice:
            self._called("choose_sync_service", ref)
            return SERVICE

        @activity.defn(name="process_sync_batches")
        async def process_sync_batches(inp: SyncProcessInput) -> SyncProcessResult:
            await self._held("process_sync_batches", inp)
            return SyncProcessResult(counters=self.processed, batches=3, failed_batches=0)

        return [*super().activities(), choose_sync_service, process_sync_batches]


@dataclass
class MockedInternalJob(MockedJob):
    """INTERNAL (populate_captures_collection, data_export): the job type's work, finishing
    (``finalized`` is what finish_internal_job answers), the export's removal."""

    job_type: JobType = JobType.POPULATE_CAPTURES_COLLECTION

    def activities(self) -> list[Callable[..., Any]]:
        @activity.defn(name="populate_collection")
        async def populate_collection(ref: JobRef) -> InternalResult:
            await self._held("populate_collection", ref)
            return PRODUCED

        @activity.defn(name="export_data")
        async def export_data(ref: JobRef) -> InternalResult:
            await self._held("export_data", ref)
            return PRODUCED

        @activity.defn(name="finish_internal_job")
        async def finish_internal_job(inp: FinishInput) -> FinalizeResult:
            self._called("finish_internal_job", inp)
            return self.finalized or FinalizeResult(status=JobState.SUCCESS, moved=True)

        @activity.defn(name="remove_export")
        async def remove_export(inp: RemoveExportInput) -> None:
            self._called("remove_export", inp)

        ours = [populate_collection, export_data, finish_internal_job, remove_export]
        return [*super().activities(), *ours]


FINAL, SENT = task.TaskOutcome.FINAL, task.TaskOutcome.SENT


def final(status: JobState) -> task.WaitResult:
    return task.WaitResult(outcome=FINAL, status=status)


@dataclass
class MockedAntennaJob(MockedJob):
    """AntennaTaskWorkflow: run_job sent (task-<n>) unless the row is final already, then what
    each wait for the row finds, in order."""

    job_type: JobType = JobType.DATA_STORAGE_SYNC
    max_sends: int = 3
    row_final_at_send: JobState | None = None
    waits: list[task.WaitResult] = field(default_factory=lambda: [final(JobState.SUCCESS)])

    def activities(self) -> list[Callable[..., Any]]:
        @activity.defn(name="start_antenna_job")
        async def start_antenna_job(inp: StartInput) -> task.AntennaStartResult:
            self._called("start_antenna_job", inp)
            return task.AntennaStartResult(**self.started_as(), max_sends=self.max_sends)

        @activity.defn(name="send_run_job")
        async def send_run_job(inp: task.SendInput) -> task.SendResult:
            self._called("send_run_job", inp)
            if self.row_final_at_send is not None:
                return task.SendResult(outcome=FINAL, status=self.row_final_at_send)
            task_id = f"task-{len(self.inputs('send_run_job'))}"
            return task.SendResult(outcome=SENT, status=JobState.PENDING, task_id=task_id)

        @activity.defn(name="wait_for_row")
        async def wait_for_row(inp: task.WaitInput) -> task.WaitResult:
            await self._held("wait_for_row", inp)
            return self.waits.pop(0)

        @activity.defn(name="revoke_run_job")
        async def revoke_run_job(inp: task.RevokeTaskInput) -> task.RevokeTaskResult:
            self._called("revoke_run_job", inp)
            return task.RevokeTaskResult(terminated=True)

        ours = [start_antenna_job, send_run_job, wait_for_row, revoke_run_job]
        return [*super().activities(), *ours]


sync_job = mocked_fixture("sync_job", MockedSyncJob, SyncJobWorkflow)
internal_job = mocked_fixture("internal_job", MockedInternalJob, InternalJobWorkflow)
antenna_job = mocked_fixture("antenna_job", MockedAntennaJob, AntennaTaskWorkflow)

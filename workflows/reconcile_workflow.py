"""The reconcile workflow: the periodic repair that replaces Antenna's ``jobs_health_check``.

Run by a Temporal Schedule the worker creates (worker/schedules.py), so there is no beat
process to keep alive and a missed or overlapping tick is Temporal's business (overlap: skip).
Two activities, in order: repair jobs whose workflow is closed but whose row is not final, then
remove what finished jobs left behind. Each retries a few times; the next tick tries again.
"""

from __future__ import annotations

from datetime import timedelta

from temporalio import workflow
from temporalio.common import RetryPolicy

with workflow.unsafe.imports_passed_through():
    from activities.reconcile.models import (
        JobsReport,
        LeftoversReport,
        ReconcileInput,
        ReconcileReport,
    )
    from activities.reconcile.repair import ReconcileActivities
    from core import naming

TIMEOUT = timedelta(minutes=30)
HEARTBEAT = timedelta(minutes=2)
RETRY = RetryPolicy(initial_interval=timedelta(seconds=5), maximum_attempts=3)


@workflow.defn(name=naming.RECONCILE_WORKFLOW)
class ReconcileWorkflow:
    @workflow.run
    async def run(self, inp: ReconcileInput) -> ReconcileReport:
        jobs: JobsReport = await workflow.execute_activity_method(
            ReconcileActivities.reconcile_jobs,
            inp,
            start_to_close_timeout=TIMEOUT,
            heartbeat_timeout=HEARTBEAT,
            retry_policy=RETRY,
        )
        leftovers: LeftoversReport = await workflow.execute_activity_method(
            ReconcileActivities.remove_leftovers,
            inp,
            start_to_close_timeout=TIMEOUT,
            heartbeat_timeout=HEARTBEAT,
            retry_policy=RETRY,
        )
        return ReconcileReport(jobs=jobs, leftovers=leftovers)

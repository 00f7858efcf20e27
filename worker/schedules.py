"""The Temporal Schedule that runs the reconcile workflow, created by the worker if missing.

One Schedule per deployment and task queue (``<name prefix>reconcile-<task queue>``). A worker
that finds it already there leaves it alone unless its interval differs from the configured one,
which it then updates: several workers starting at once all end with the same single Schedule.
"""

from __future__ import annotations

import logging

from temporalio.client import (
    Client,
    Schedule,
    ScheduleActionStartWorkflow,
    ScheduleAlreadyRunningError,
    ScheduleIntervalSpec,
    ScheduleOverlapPolicy,
    SchedulePolicy,
    ScheduleSpec,
    ScheduleUpdate,
    ScheduleUpdateInput,
)

from activities.reconcile.models import ReconcileInput
from core import naming
from core.settings import Settings

log = logging.getLogger("antenna_jobs.worker")


def reconcile_schedule(settings: Settings) -> Schedule:
    queue = settings.jobs.task_queue
    return Schedule(
        action=ScheduleActionStartWorkflow(
            naming.RECONCILE_WORKFLOW,
            ReconcileInput(),
            id=settings.jobs.names.reconcile_workflow_id(queue),
            task_queue=queue,
        ),
        spec=ScheduleSpec(intervals=[ScheduleIntervalSpec(every=settings.reconcile.interval)]),
        # A slow run (many jobs, Temporal busy) is never stacked on by the next tick.
        policy=SchedulePolicy(overlap=ScheduleOverlapPolicy.SKIP),
    )


async def ensure_reconcile_schedule(client: Client, settings: Settings) -> str | None:
    """Create the Schedule if it is missing; returns its id (None: disabled by interval 0)."""
    if settings.reconcile.interval.total_seconds() <= 0:
        return None
    schedule_id = settings.jobs.names.reconcile_schedule_id(settings.jobs.task_queue)
    wanted = reconcile_schedule(settings)
    try:
        await client.create_schedule(schedule_id, wanted)
        log.info("created schedule %s (every %s)", schedule_id, settings.reconcile.interval)
        return schedule_id
    except ScheduleAlreadyRunningError:
        pass
    handle = client.get_schedule_handle(schedule_id)
    current = (await handle.describe()).schedule
    if [i.every for i in current.spec.intervals] != [settings.reconcile.interval]:

        def update(_: ScheduleUpdateInput) -> ScheduleUpdate:
            return ScheduleUpdate(schedule=wanted)

        await handle.update(update)
        log.info("updated schedule %s to every %s", schedule_id, settings.reconcile.interval)
    return schedule_id

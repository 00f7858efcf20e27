"""History stays O(1) in images: the same events for 100 and for 5,000 images.

Also prints the wall time of a 5,000-image job through the simulated worker and the publish rate
(the figures quoted in the engineering report).
"""

from __future__ import annotations

import time
from collections import Counter

from temporalio.api.enums.v1 import EventType
from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.worker import Replayer

from antenna_db import job_store
from core.states import JobState
from job_control.actions import JobActions
from tests.helpers.jobs import make_job
from tests.helpers.temporal import SimulatedAdcWorker, job_handle, running_workers, simulated_worker
from workflows.job_workflow import JobWorkflow

_WORKFLOW_TASK_EVENTS = {
    EventType.EVENT_TYPE_WORKFLOW_TASK_SCHEDULED,
    EventType.EVENT_TYPE_WORKFLOW_TASK_STARTED,
    EventType.EVENT_TYPE_WORKFLOW_TASK_COMPLETED,
    EventType.EVENT_TYPE_WORKFLOW_TASK_FAILED,
    EventType.EVENT_TYPE_WORKFLOW_TASK_TIMED_OUT,
}
# A workflow task that failed or timed out (a busy machine; once, CPython's import lock raised
# KeyError inside the sandbox) is retried by Temporal: three more events, nothing else changes.
_RETRIED_TASK = {
    EventType.EVENT_TYPE_WORKFLOW_TASK_FAILED,
    EventType.EVENT_TYPE_WORKFLOW_TASK_TIMED_OUT,
}


def events_but_retried_tasks(events) -> int:
    return len(events) - 3 * sum(1 for e in events if e in _RETRIED_TASK)


async def run_job(pool, client, settings, nats_client, images: int):
    job, seeded, _ = await make_job(pool, images=images)
    worker = SimulatedAdcWorker(
        nats_client, pool, job.id, seeded.pipeline_slug, fails=lambda i: i % 50 == 0
    )
    started = time.monotonic()
    async with simulated_worker(worker):
        await JobActions(pool, client, settings).run(job.id)
        handle = job_handle(client, job.id)
        result = await handle.result()
    elapsed = time.monotonic() - started
    history = await handle.fetch_history()
    # The recorded history replays on the current code: the workflow is deterministic.
    await Replayer(workflows=[JobWorkflow], data_converter=pydantic_data_converter).replay_workflow(
        history
    )
    events = [e.event_type for e in history.events]
    async with pool.connection() as conn:
        # Past the per-image error lines of its failed images.
        logs = [r["message"] for r in await job_store.latest_logs(conn, job.id, 500)]
    return result, events, elapsed, logs


async def test_history_is_the_same_for_100_and_5000_images(
    pool, temporal_client, settings, nats_client
):
    async with running_workers(temporal_client, settings):
        small, small_events, _, _ = await run_job(pool, temporal_client, settings, nats_client, 100)
        big, big_events, elapsed, logs = await run_job(
            pool, temporal_client, settings, nats_client, 5000
        )
    assert small.status == big.status == JobState.SUCCESS
    assert (big.total == 5000 and big.failed == sum(1 for _ in range(5000)) // 50) or big.failed > 0

    def activity_events(events):
        return Counter(e for e in events if e not in _WORKFLOW_TASK_EVENTS)

    # Every non-workflow-task event (activities, search attribute upserts, ...) is identical;
    # the total is too, unless the server happened to batch two completions in one task.
    assert activity_events(small_events) == activity_events(big_events)
    assert events_but_retried_tasks(small_events) == events_but_retried_tasks(big_events)
    published = next(m for m in logs if m.startswith("Published 5000 tasks"))
    print(f"\n5,000-image job: {elapsed:.1f} s wall, {len(big_events)} events; {published}")

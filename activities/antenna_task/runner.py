"""A job run by Antenna's own code: take the job, send Antenna's ``run_job`` to its Celery
worker, wait for the row to become final, revoke the task on cancel.

Antenna's code owns the row while it runs (its task_prerun writes PENDING, the job type's run
STARTED, its progress stages and log lines, and the final status; its task_failure writes
FAILURE). We own when it runs and when it stops:

- **send** (``send_run_job``): the task id is deterministic (uuid5 of the workflow run and the
  task it replaces) and written into ``jobs_job.task_id`` *before* publishing, so Antenna's
  cancel revokes it and its task_failure finds the job. An attempt that finds its id already in
  the row does not publish again (at most one message per id: Antenna's run_job has no guard
  against running twice); if that earlier attempt died before publishing, the wait's lost rule
  below sends a new one. A publish that raised puts the row's previous task id back and fails
  the attempt, so the retry publishes.
- **wait** (``wait_for_row``): reads the row (one indexed query) at ``task_poll_interval``,
  growing by half each quiet round up to ``task_poll_max``, back to the start whenever the row
  changes; heartbeats all along, so a cancel stops it within a heartbeat. Antenna's table has no
  NOTIFY, and Celery's events or result backend are not under our control, so a slow poll is the
  one signal that always holds. A row saying CANCELING (Antenna's Cancel button) stops it.
- **lost task**: Antenna's run_job is acked on delivery, so a Celery worker that dies mid-task
  takes the message with it and the row stays STARTED for ever. While the row stands still the
  wait asks the workers (Celery's ``query_task`` broadcast) whether one holds the task; when for
  ``task_lost_after`` workers answered and none held it, the task queue held no waiting message
  and the row did not change, the task is lost: the workflow revokes it (so it can never come
  back alongside) and sends run_job again, ``task_max_sends`` times in all, then fails the job.
  Any doubt (no worker answering, the broker not answering) resets the clock: a resend needs
  positive evidence of loss.
- **revoke** (``revoke_run_job``): Celery's ``revoke(task_id, terminate=True)`` broadcast, as
  Antenna's Job.cancel sends it, then until no worker holds the task (bounded).
"""

from __future__ import annotations

import asyncio
import time
import uuid

from temporalio import activity

from activities.antenna_task.celery_link import AntennaCelery
from activities.antenna_task.models import (
    AntennaStartResult,
    RevokeTaskInput,
    RevokeTaskResult,
    SendInput,
    SendResult,
    TaskOutcome,
    WaitInput,
    WaitResult,
)
from activities.heartbeat import heartbeating, run_id
from activities.jobs import PoolActivities, check_workflow, found, not_started
from activities.models import StartInput
from antenna_db import job_store, job_tasks
from core.errors import Failure, failure
from core.settings import Settings
from core.states import CANCEL_STATES, FINAL_STATES
from storage import job_runs
from storage.pool import Pool

_TASK_IDS = uuid.UUID("6f1d7c1e-2b7a-4c55-9d3e-a1b2c3d4e5f6")
# How long a revoke waits (at most) for the workers to let go of the task, in control timeouts.
_REVOKE_SETTLE_ROUNDS = 10


def task_id_for(workflow_id: str, workflow_run_id: str, previous: str | None) -> str:
    """The same for every attempt of one send: the run and the task it replaces."""
    return str(uuid.uuid5(_TASK_IDS, f"{workflow_id}/{workflow_run_id}/{previous or 'first'}"))


def _final(row: job_tasks.TaskRow) -> bool:
    """Whether the job is over (FINAL_STATES; REVOKED is final first); one being cancelled
    stops the activity, non-retryable."""
    if row.status in FINAL_STATES:
        return True
    if row.status in CANCEL_STATES:
        raise failure(Failure.JOB_CANCELLED, f"job {row.id} is {row.status}")
    return False


class AntennaTaskActivities(PoolActivities):
    def __init__(self, pool: Pool, settings: Settings, celery: AntennaCelery) -> None:
        super().__init__(pool, settings)
        self._celery = celery

    @activity.defn(name="start_antenna_job")
    async def start_antenna_job(self, inp: StartInput) -> AntennaStartResult:
        """This run takes the job (job_runs); the status is left to Antenna's code."""
        jobs, antenna = self._settings.jobs, self._settings.antenna
        async with self._pool.connection() as conn:
            row = await found(job_tasks.get(conn, inp.job_id))
            result = AntennaStartResult.started(
                row.status,
                row.project_id,
                jobs,
                row.job_type,
                max_sends=antenna.task_max_sends,
                task_queue=antenna.task_queue,
            )
            if (stop := not_started(result)) is not None:
                return stop
            check_workflow(
                inp.workflow,
                row.id,
                row.job_type,
                row.job_type_key,
                row.dispatch_mode,
                antenna_tasks=antenna.runs_antenna_tasks,
            )
            info = activity.info()
            if await job_runs.take(conn, row.id, run_id(), ""):
                await job_store.append_log(
                    conn,
                    row.id,
                    f"Job taken by workflow {info.workflow_id} (run {info.workflow_run_id}):"
                    f" Antenna's own code runs this {row.job_type_key} job",
                    context={"from_status": row.status.value},
                )
        return result

    @activity.defn(name="send_run_job")
    async def send_run_job(self, inp: SendInput) -> SendResult:
        info = activity.info()
        task_id = task_id_for(info.workflow_id or "", run_id(), inp.previous)
        queue = self._settings.antenna.task_queue
        async with self._pool.connection() as conn:
            row = await job_tasks.get(conn, inp.job_id)
            if _final(row):
                return SendResult(outcome=TaskOutcome.FINAL, status=row.status)
            if row.task_id == task_id:
                # An earlier attempt wrote it and then published, or died just before: never
                # two messages for one id (a lost one is resent by the wait's rule).
                return SendResult(outcome=TaskOutcome.SENT, status=row.status, task_id=task_id)
            if inp.previous is not None:
                # The lost task can never come back to run beside its replacement.
                await self._celery.revoke(inp.previous)
            written = await job_tasks.set_task_id(
                conn, row.id, task_id, unless_status=FINAL_STATES | CANCEL_STATES
            )
            if not written:
                status = (await job_tasks.get(conn, row.id)).status
                if status in CANCEL_STATES:
                    raise failure(Failure.JOB_CANCELLED, f"job {row.id} is {status}")
                return SendResult(outcome=TaskOutcome.FINAL, status=status)
        try:
            await self._celery.send_run_job(row.id, task_id)
        except Exception:
            async with self._pool.connection() as conn:
                await job_tasks.set_task_id(
                    conn,
                    row.id,
                    row.task_id,
                    unless_status=frozenset(),
                    expected=task_id,
                    check_expected=True,
                )
            raise
        async with self._pool.connection() as conn:
            again = f" again (task {inp.previous} was lost)" if inp.previous else ""
            await job_store.append_log(
                conn,
                row.id,
                f"Sent Antenna's run_job{again} to queue {queue!r} (task {task_id})",
                context={"celery_task_id": task_id, "queue": queue, "replaces": inp.previous},
            )
        return SendResult(outcome=TaskOutcome.SENT, status=row.status, task_id=task_id)

    @activity.defn(name="wait_for_row")
    async def wait_for_row(self, inp: WaitInput) -> WaitResult:
        antenna = self._settings.antenna
        first = antenna.task_poll_interval.total_seconds()
        most = max(first, antenna.task_poll_max.total_seconds())
        lost_after = antenna.task_lost_after.total_seconds()
        interval = first
        last_change: object = None
        quiet_since = time.monotonic()
        unseen_since: float | None = None
        async with heartbeating(self._settings.jobs.heartbeat_interval):
            while True:
                async with self._pool.connection() as conn:
                    row = await job_tasks.get(conn, inp.job_id)
                if _final(row):
                    return WaitResult(outcome=TaskOutcome.FINAL, status=row.status)
                now = time.monotonic()
                if (row.updated_at, row.status) != last_change:
                    last_change, quiet_since, interval = (row.updated_at, row.status), now, first
                    unseen_since = None
                else:
                    unseen_since = await self._unseen_since(inp.task_id, unseen_since, now)
                    if (
                        unseen_since is not None
                        and now - unseen_since >= lost_after
                        and now - quiet_since >= lost_after
                    ):
                        return WaitResult(outcome=TaskOutcome.LOST, status=row.status)
                    interval = min(interval * 1.5, most)
                await asyncio.sleep(interval)

    async def _unseen_since(self, task_id: str, since: float | None, now: float) -> float | None:
        """Since when the workers that answered do not hold the task and nothing waits in its
        queue (None: a worker holds it, no worker answered, a message waits, or the broker did
        not answer)."""
        try:
            answered, held = await self._celery.holders(task_id)
            # No answer at all (every worker down, or remote control disabled) is no evidence:
            # the task waits for a worker that can say it does not have it.
            if held or answered == 0 or await self._celery.waiting() > 0:
                return None
        except Exception as err:
            activity.logger.warning("cannot tell whether task %s is alive: %s", task_id, err)
            return None
        return now if since is None else since

    @activity.defn(name="revoke_run_job")
    async def revoke_run_job(self, inp: RevokeTaskInput) -> RevokeTaskResult:
        """Antenna's Job.cancel for a job run by Celery: revoke with terminate, then wait
        (bounded) until no worker holds the task."""
        await self._celery.revoke(inp.task_id)
        control = self._settings.antenna.control_timeout.total_seconds()
        # Within the attempt's timeout: a task that outlives this is logged, not waited for.
        settle = min(
            _REVOKE_SETTLE_ROUNDS * control,
            self._settings.jobs.short_activity_timeout.total_seconds() / 2,
        )
        deadline = time.monotonic() + settle
        held: list[str] = []
        while True:
            _answered, held = await self._celery.holders(inp.task_id)
            if not held or time.monotonic() >= deadline:
                break
            await asyncio.sleep(control / 2)
        terminated = not held
        async with self._pool.connection() as conn:
            await job_store.append_log(
                conn,
                inp.job_id,
                f"Revoked Antenna's run_job task {inp.task_id} with terminate ({inp.reason})"
                + ("" if terminated else f"; still held by {', '.join(held)}"),
                level="WARNING",
                context={"celery_task_id": inp.task_id, "terminated": terminated},
            )
        return RevokeTaskResult(terminated=terminated, holders=held)

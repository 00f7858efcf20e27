"""Reconcile: repair jobs whose workflow ended without finishing them, and remove leftovers.

Replaces Antenna's ``jobs_health_check`` (docs/antenna-jobs.md section 4). A job's workflow normally
writes a final status and cleans up in its own ``finally``; ``temporal workflow terminate`` (or a
run that timed out, or a start request that never reached Temporal) skips that. Here:

- a job whose row is not final (CREATED excluded: nothing was started, antenna#1354) and whose
  workflow (``<name prefix>job-{id}``) is closed, or does not exist, becomes REVOKED if it was
  CANCELING, else FAILURE, with the reason in its log; then its stream, consumer, Redis keys and
  inbox rows go. Guards against repairing a job that is only between two runs: the row must be
  untouched since the workflow closed (or for ``grace``), and the status write checks
  ``updated_at`` did not move.
- a PENDING job with no workflow (or one closed before the job was set PENDING again) is never
  failed: its run_job message may still be waiting (the bridge down for a deploy, a broker
  backlog, a message taken by another consumer). Once the row is quiet for ``grace`` its workflow
  is started here, as the bridge would (JobActions.start_for_antenna); the bridge, when the
  message comes, joins that run or finds the job final. A PENDING job whose workflow closed
  after the row's last write (terminated before it took the job) is still failed.
- leftovers of final jobs (a stream created before the job finished, Redis keys, inbox rows) are
  removed, and ``job_N`` streams whose job does not exist here once older than ``zombie_age``.

Temporal is asked through an injected client (describe is authoritative; visibility lags).
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterable
from contextlib import suppress
from datetime import UTC, datetime
from typing import Any

import redis.asyncio as aioredis
from nats.js import JetStreamContext
from nats.js.errors import NotFoundError
from temporalio import activity
from temporalio.client import Client, WorkflowExecutionStatus
from temporalio.service import RPCError, RPCStatusCode

from activities.async_api.task_queue import TaskQueueActivities
from activities.heartbeat import heartbeating
from activities.jobs import PoolActivities
from activities.reconcile.models import (
    JobsReport,
    LeftoversReport,
    ReconcileInput,
    RepairedJob,
)
from antenna_db import job_store, users
from bridge.failures import describe, is_transient
from core.settings import Settings
from core.states import FINAL_STATES, JobState
from job_control.actions import JobActions
from storage.pool import Pool

# Not final, and not CREATED: a CREATED job has no workflow by design.
CANDIDATE_STATES = frozenset(JobState) - FINAL_STATES - {JobState.CREATED}
# Temporal calls in flight at once while checking a page of jobs.
_DESCRIBE_CONCURRENCY = 20
# The verdict for a PENDING job whose run_job may still be waiting: start its workflow here.
START = "start"


class ReconcileActivities(PoolActivities):
    def __init__(
        self,
        pool: Pool,
        client: Client,
        queue: TaskQueueActivities,
        js: JetStreamContext,
        redis: aioredis.Redis,
        settings: Settings,
    ) -> None:
        super().__init__(pool, settings)
        self._client = client
        self._queue = queue
        self._js = js
        self._redis = redis

    @activity.defn(name="reconcile_jobs")
    async def reconcile_jobs(self, inp: ReconcileInput) -> JobsReport:
        report = JobsReport()
        grace = self._settings.reconcile.grace
        after = 0
        limit = asyncio.Semaphore(_DESCRIBE_CONCURRENCY)
        async with heartbeating(self._settings.jobs.heartbeat_interval, lambda: report):
            while True:
                async with self._pool.connection() as conn:
                    rows = await job_store.reconcile_candidates(
                        conn, CANDIDATE_STATES, grace, after, inp.page_size
                    )
                if not rows:
                    break
                after = rows[-1]["id"]
                verdicts = await asyncio.gather(*(self._verdict(row, limit) for row in rows))
                for row, verdict in zip(rows, verdicts, strict=True):
                    report.checked += 1
                    if verdict == "running":
                        report.running += 1
                    elif verdict == "recent":
                        report.recent += 1
                    elif verdict == "unknown":
                        report.unknown += 1
                    elif verdict == START:
                        await self._start(row, report)
                    else:
                        repaired = await self._repair(row, verdict)
                        if repaired is not None:
                            report.repaired.append(repaired)
        return report

    async def _verdict(self, row: dict[str, Any], limit: asyncio.Semaphore) -> str:
        """ "running", "recent", "unknown", or the reason the job needs repair."""
        wid = self._names.workflow_id(row["id"])
        try:
            async with limit:
                description = await self._client.get_workflow_handle(wid).describe()
        except RPCError as err:
            if err.status != RPCStatusCode.NOT_FOUND:
                activity.logger.warning("cannot describe %s: %s", wid, err)
                return "unknown"
            if not row["quiet"]:
                return "recent"
            if row["status"] == JobState.PENDING:
                return START
            return f"its workflow {wid} does not exist"
        status = description.status
        if status is None or status == WorkflowExecutionStatus.RUNNING:
            return "running"
        closed = description.close_time
        # Touched after its workflow closed: a retry's RETRY, say, whose run is about to start.
        untouched = closed is not None and row["updated_at"] <= closed
        if not (untouched or row["quiet"]):
            return "recent"
        if not untouched and row["status"] == JobState.PENDING:
            # Set PENDING again after its last run closed (Antenna's Retry): a new Run waits.
            return START
        when = f" at {closed.astimezone(UTC):%Y-%m-%d %H:%M:%S} UTC" if closed else ""
        return f"its workflow {wid} is {status.name}{when} but the job was still {row['status']}"

    async def _start(self, row: dict[str, Any], report: JobsReport) -> None:
        """Start (or join) the job's workflow. Temporal or Postgres unreachable: tried again
        next time; a start that can never succeed (a row that cannot be read): FAILURE with the
        reason, not a retry every pass for ever."""
        job_id = row["id"]
        actions = JobActions(self._pool, self._client, self._settings)
        try:
            outcome = await actions.start_for_antenna(job_id, started_by="reconcile")
        except Exception as err:
            if is_transient(err):
                activity.logger.warning("cannot start job %s's workflow now: %s", job_id, err)
                report.unknown += 1
                return
            repaired = await self._repair(
                row, f"its workflow could not be started ({describe(err)})"
            )
            if repaired is not None:
                report.repaired.append(repaired)
            return
        activity.logger.info("job %s was PENDING with no run: %s by reconcile", job_id, outcome)
        report.started.append(job_id)

    async def _repair(self, row: dict[str, Any], reason: str) -> RepairedJob | None:
        job_id, status = row["id"], JobState(row["status"])
        to = JobState.REVOKED if status == JobState.CANCELING else JobState.FAILURE
        async with self._pool.connection() as conn:
            moved = await job_store.transition(
                conn, job_id, to, [status], finished=True, unchanged_since=row["updated_at"]
            )
            if not moved:
                return None  # something wrote the row meanwhile: look again next time
            await job_store.append_log(
                conn,
                job_id,
                f"Reconciled: {reason}; {status.value} -> {to.value}",
                level="ERROR" if to == JobState.FAILURE else "WARNING",
                context={"from_status": status.value, "to_status": to.value},
            )
            await job_store.clear_run_params(conn, job_id)
        # After the final status, so a run that is still starting can never lose its new stream
        # to this (a retry must first move the job out of its final status).
        await self._queue.remove(job_id)
        activity.logger.warning("job %s reconciled: %s -> %s (%s)", job_id, status, to, reason)
        return RepairedJob(job_id=job_id, from_status=status, to_status=to, reason=reason)

    @activity.defn(name="remove_leftovers")
    async def remove_leftovers(self, inp: ReconcileInput) -> LeftoversReport:
        report = LeftoversReport()
        async with heartbeating(self._settings.jobs.heartbeat_interval, lambda: report):
            await self._sweep_streams(report)
            await self._sweep_redis(report, inp.page_size)
            async with self._pool.connection() as conn:
                report.inbox_rows_removed = await job_store.remove_inbox_of_final_jobs(conn)
                report.tokens_removed = await users.remove_expired_tokens(conn)
        return report

    async def _jobs(self, ids: Iterable[int]) -> dict[int, dict[str, Any]]:
        async with self._pool.connection() as conn:
            return await job_store.statuses(conn, ids)

    async def _sweep_streams(self, report: LeftoversReport) -> None:
        zombie_age = self._settings.reconcile.zombie_age
        offset = 0
        while True:
            page = await self._js.streams_info(offset=offset)
            if not page:
                break
            offset += len(page)
            streams = {
                job_id: info
                for info in page
                if (job_id := self._names.job_id_from_stream(info.config.name or "")) is not None
            }
            report.streams_checked += len(streams)
            jobs = await self._jobs(streams)
            now = datetime.now(UTC)
            for job_id, info in streams.items():
                job, created = jobs.get(job_id), info.created
                if job is None:
                    if created is not None and now - created > zombie_age:
                        with suppress(NotFoundError):
                            await self._js.delete_stream(self._names.stream(job_id))
                            report.streams_removed.append(self._names.stream(job_id))
                    continue
                finished = job["finished_at"]
                if JobState(job["status"]) not in FINAL_STATES:
                    continue
                if created is None or finished is None or created < finished:
                    await self._queue.remove(job_id)
                    report.streams_removed.append(self._names.stream(job_id))

    async def _sweep_redis(self, report: LeftoversReport, batch: int) -> None:
        """Keys of final jobs only: keys of jobs unknown here may be another deployment's, and
        their TTL (settings.redis.key_ttl) bounds them anyway."""
        pending: set[int] = set()
        async for key in self._redis.scan_iter(match=self._names.redis_key_pattern(), count=1000):
            job_id = self._names.job_id_from_redis_key(key)
            if job_id is not None:
                pending.add(job_id)
            if len(pending) >= batch:
                await self._remove_final_keys(pending, report)
                pending = set()
        await self._remove_final_keys(pending, report)

    async def _remove_final_keys(self, ids: set[int], report: LeftoversReport) -> None:
        if not ids:
            return
        jobs = await self._jobs(ids)
        final = [i for i, job in jobs.items() if JobState(job["status"]) in FINAL_STATES]
        for job_id in final:
            await self._redis.delete(*self._names.redis_keys(job_id))
        report.redis_jobs_removed += sorted(final)

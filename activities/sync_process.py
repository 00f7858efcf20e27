"""SYNC_API: post a job's images in batches to a push-mode processing service's ``/process`` and
save each answer in one transaction (the aggregator's saving code, so rows are the same as in
ASYNC_API mode).

One long heartbeating activity walks the job's pending images by ordinal; its heartbeat details
hold the last saved batch, so a retried attempt (worker killed) resumes at the next unsaved one.
A batch is retried on a 5xx, a timeout or a connection error (with backoff); when it still fails,
or the answer is invalid, its images are marked failed with the error (never "processed, nothing
found", Antenna 6.2). A cancel lands at the await in progress, the HTTP request included.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

import httpx
import psycopg
from psycopg_pool import AsyncConnectionPool
from pydantic import ValidationError
from temporalio import activity
from temporalio.exceptions import ApplicationError

from activities.aggregate_progress import apply_counters, throughput_line
from activities.heartbeat import heartbeating, resume_details
from activities.jobs import RowCancelCheck, final_status
from activities.models import AggregateCounters, JobRef
from activities.result_saver import (
    BatchOutcome,
    ParsedResults,
    PipelineContext,
    add_response,
    record_parsed,
)
from activities.results import load_counters, load_pipeline
from activities.service_choice import choose_live_service, service_url
from activities.sync_models import (
    NO_LIVE_SERVICE,
    ServiceChoice,
    SyncCheckpoint,
    SyncProcessInput,
    SyncProcessResult,
)
from activities.task_queue import NO_URL_ERROR
from core import job_store
from core.progress import JobProgress
from core.schemas import PipelineRequest, PipelineResultsResponse, SourceImageRequest
from core.settings import Settings
from core.states import JobState

Pool = AsyncConnectionPool[psycopg.AsyncConnection[Any]]
BATCH_SIZE_KEY = "request_source_image_batch_size"
_THROUGHPUT_EVERY = 10.0

_NEXT_BATCH = (
    "SELECT ji.ordinal, ji.source_image_id, si.url FROM job_images ji"
    " JOIN source_images si ON si.id = ji.source_image_id"
    " WHERE ji.job_id = %s AND ji.ordinal > %s AND ji.status = 'pending'"
    " ORDER BY ji.ordinal LIMIT %s"
)
# The pipeline's default request config, overridden by the project's (Antenna's get_config).
_CONFIG = (
    "SELECT p.config || coalesce(pp.config, '{}'::jsonb) AS config FROM jobs j"
    " JOIN pipelines p ON p.id = j.pipeline_id LEFT JOIN project_pipelines pp"
    " ON pp.pipeline_id = p.id AND pp.project_id = j.project_id WHERE j.id = %s"
)


def batch_size(config: dict[str, Any]) -> int:
    value = config.get(BATCH_SIZE_KEY, 1)
    return value if isinstance(value, int) and not isinstance(value, bool) and value >= 1 else 1


class SyncActivities:
    def __init__(self, pool: Pool, http: httpx.AsyncClient, settings: Settings) -> None:
        self._pool = pool
        self._http = http
        self._settings = settings

    @activity.defn(name="choose_sync_service")
    async def choose_service(self, ref: JobRef) -> ServiceChoice:
        """The live push-mode service for this run of the job; none ready fails the job."""
        async with self._pool.connection() as conn:
            choice, probes = await choose_live_service(
                conn, self._http, ref.job_id, self._settings.sync.readyz_timeout
            )
            checked = "; ".join(f"{p.name}: {p.problem}" for p in probes if p.problem)
            if choice is None:
                detail = f" (checked: {checked})" if probes else " (none is registered)"
                raise ApplicationError(
                    f"no live processing service with an endpoint URL for the job's pipeline"
                    f" and project{detail}",
                    type=NO_LIVE_SERVICE,
                    non_retryable=True,
                )
            await job_store.append_log(
                conn,
                ref.job_id,
                f"Processing service {choice.name} ({choice.endpoint_url}) chosen:"
                f" /readyz in {choice.latency * 1000:.0f} ms"
                + (f"; not ready: {checked}" if checked else ""),
                context=choice.model_dump(),
            )
        return choice

    @activity.defn(name="process_sync_batches")
    async def process_batches(self, inp: SyncProcessInput) -> SyncProcessResult:
        return await _SyncRun(self, inp).run()


class _SyncRun:
    """One attempt of process_sync_batches; its state lives as long as the attempt."""

    def __init__(self, owner: SyncActivities, inp: SyncProcessInput) -> None:
        self.o = owner
        self.inp = inp
        self.job_id = inp.job_id
        self.jobs = owner._settings.jobs
        self.sync = owner._settings.sync
        self.counters = AggregateCounters()
        self.progress = JobProgress()
        self.pipeline = PipelineContext(slug="", algorithms={}, detector_id=None)
        self.config: dict[str, Any] = {}
        self.started = time.monotonic()
        self.last_progress = 0.0
        self.last_throughput = self.started
        self._check_job = RowCancelCheck(
            owner._pool, inp.job_id, self.jobs.heartbeat_interval, first_now=True
        )

    async def run(self) -> SyncProcessResult:
        async with self.o._pool.connection() as conn:
            self.pipeline = await load_pipeline(conn, self.job_id)
            self.counters = await load_counters(conn, self.job_id)
            self.progress = (await job_store.get_job(conn, self.job_id)).progress
            cur = await conn.execute(_CONFIG, (self.job_id,))
            row = await cur.fetchone()
        self.config = dict(row["config"]) if row else {}
        size = batch_size(self.config)
        state = resume_details(SyncCheckpoint) or SyncCheckpoint()
        resumed = state.last_ordinal
        async with heartbeating(self.jobs.heartbeat_interval, lambda: state):
            while True:
                await self._check_job()
                async with self.o._pool.connection() as conn:
                    cur = await conn.execute(_NEXT_BATCH, (self.job_id, state.last_ordinal, size))
                    rows = list(await cur.fetchall())
                if not rows:
                    break
                outcome, failed = await self._batch(rows)
                state = SyncCheckpoint(
                    last_ordinal=rows[-1]["ordinal"],
                    batches=state.batches + 1,
                    failed_batches=state.failed_batches + failed,
                )
                self._apply(outcome)
                await self._maybe_write_progress()
        status = final_status(self.counters, self.jobs.failure_threshold)
        await self._write_progress(final=status)
        await self._log(
            f"Sent {state.batches} batches of up to {size} images to {self.inp.service.name}"
            f" ({state.failed_batches} failed)"
            + (f", resumed after ordinal {resumed}" if resumed else ""),
            context=state.model_dump(),
        )
        return SyncProcessResult(
            counters=self.counters, batches=state.batches, failed_batches=state.failed_batches
        )

    async def _batch(self, rows: list[dict[str, Any]]) -> tuple[BatchOutcome, int]:
        """Post one batch and save what came back (or the failure), in one transaction."""
        parsed = ParsedResults()
        for r in rows:
            if not r["url"]:
                parsed.failed[r["source_image_id"]] = NO_URL_ERROR
        sent = [r for r in rows if r["url"]]
        error = ""
        if sent:
            request = PipelineRequest(
                pipeline=self.pipeline.slug,
                source_images=[
                    SourceImageRequest(id=str(r["source_image_id"]), url=r["url"]) for r in sent
                ],
                config=self.config,
            )
            response, error = await self._post(request)
            ids = {r["source_image_id"] for r in sent}
            if response is not None:
                answered = ParsedResults()
                add_response(answered, response, self.pipeline)
                # Only the images this batch asked for: never save or fail another from it.
                parsed.processed = {i: d for i, d in answered.processed.items() if i in ids}
                parsed.failed |= {i: e for i, e in answered.failed.items() if i in ids}
            for image in ids - set(parsed.processed):
                parsed.failed.setdefault(image, error or "missing from the service's answer")
        async with self.o._pool.connection() as conn, conn.transaction():
            outcome = await record_parsed(conn, self.job_id, self.pipeline, parsed)
        if error:
            await self._log(
                f"Batch of {len(sent)} images failed: {error}",
                level="ERROR",
                context={"image_ids": sorted(r["source_image_id"] for r in sent)[:10]},
            )
        return outcome, int(bool(error))

    async def _post(self, request: PipelineRequest) -> tuple[PipelineResultsResponse | None, str]:
        """POST with retries on 5xx/timeouts/connection errors; (answer, "") or (None, error)."""
        url = service_url(self.inp.service.endpoint_url, "process")
        timeout = httpx.Timeout(
            self.sync.read_timeout.total_seconds(),
            connect=self.sync.connect_timeout.total_seconds(),
        )
        attempts = self.sync.retries + 1
        backoff = self.sync.retry_backoff.total_seconds()
        error = ""
        for attempt in range(1, attempts + 1):
            try:
                response = await self.o._http.post(
                    url, json=request.model_dump(mode="json"), timeout=timeout
                )
            except httpx.TimeoutException as err:
                error = f"{type(err).__name__}: no answer within the timeout"
            except httpx.TransportError as err:
                error = f"{type(err).__name__}: {err}"
            else:
                if response.status_code < 400:
                    try:
                        return PipelineResultsResponse.model_validate_json(response.content), ""
                    except ValidationError as err:
                        first = err.errors()[0]
                        where = ".".join(str(p) for p in first["loc"])
                        return None, f"invalid response: {where}: {first['msg']}"
                error = f"HTTP {response.status_code}: {response.text[:200]}"
                if response.status_code < 500:
                    return None, error
            if attempt < attempts:
                await asyncio.sleep(backoff * 2 ** (attempt - 1))
        return None, f"{error} (after {attempts} attempts)"

    def _apply(self, outcome: BatchOutcome) -> None:
        self.counters = self.counters.model_copy(
            update={
                "processed": self.counters.processed + len(outcome.processed),
                "failed": self.counters.failed + len(outcome.failed),
                "detections": self.counters.detections + outcome.detections,
                "classifications": self.counters.classifications + outcome.classifications,
            }
        )

    async def _maybe_write_progress(self) -> None:
        now = time.monotonic()
        if now - self.last_progress >= self.jobs.progress_interval.total_seconds():
            await self._write_progress()
        every = max(_THROUGHPUT_EVERY, self.jobs.progress_interval.total_seconds())
        if now - self.last_throughput >= every and self.counters.done:
            self.last_throughput = now
            await self._log(throughput_line(self.counters, now - self.started))

    async def _write_progress(self, final: JobState | None = None) -> None:
        self.progress = apply_counters(self.progress, self.counters, final)
        async with self.o._pool.connection() as conn:
            await job_store.save_progress(conn, self.job_id, self.progress)
        self.last_progress = time.monotonic()

    async def _log(
        self, message: str, *, level: str = "INFO", context: dict[str, Any] | None = None
    ) -> None:
        async with self.o._pool.connection() as conn:
            await job_store.append_log(conn, self.job_id, message, level=level, context=context)

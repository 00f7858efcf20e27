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
from typing import Any

import httpx
from pydantic import ValidationError
from temporalio import activity

from activities.crops import CropRequests
from activities.heartbeat import heartbeating, resume_details, run_id
from activities.jobs import RowCancelCheck
from activities.ml_run import LOGGED_IMAGE_IDS, MlRun
from activities.models import JobRef
from activities.result_saver import BatchOutcome, ParsedResults, record_parsed
from activities.sync_api.models import (
    ServiceChoice,
    SyncCheckpoint,
    SyncProcessInput,
    SyncProcessResult,
)
from activities.sync_api.service_choice import choose_live_service, service_url
from antenna_db import captures, job_store, pipelines
from antenna_db.capture_urls import NO_URL_ERROR
from antenna_db.pipelines import BATCH_SIZE_KEY
from core import backoff
from core.errors import Failure, failure
from core.result_payload import NOT_STORED, image_id, images_named
from core.schemas import PipelineRequest, PipelineResultsResponse, SourceImageRequest
from core.settings import Settings
from storage import inbox
from storage.inbox import InboxEntry
from storage.pool import Pool


def batch_size(config: dict[str, Any]) -> int:
    value = config.get(BATCH_SIZE_KEY, 1)
    return value if isinstance(value, int) and not isinstance(value, bool) and value >= 1 else 1


class SyncActivities:
    def __init__(
        self,
        pool: Pool,
        http: httpx.AsyncClient,
        settings: Settings,
        crops: CropRequests | None = None,
    ) -> None:
        self._pool = pool
        self._http = http
        self._settings = settings
        self._crops = crops or CropRequests()

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
                raise failure(
                    Failure.NO_LIVE_SERVICE,
                    f"no live processing service with an endpoint URL for the job's pipeline"
                    f" and project{detail}",
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
        run = MlRun(self._pool, self._settings.jobs, self._crops, inp.job_id, run_id())
        await run.load()
        return await _SyncRun(run, self._pool, self._http, self._settings, inp).run()


class _SyncRun:
    """One attempt of process_sync_batches; its state lives as long as the attempt."""

    def __init__(
        self,
        run: MlRun,
        pool: Pool,
        http: httpx.AsyncClient,
        settings: Settings,
        inp: SyncProcessInput,
    ) -> None:
        self.ml = run
        self.pool = pool
        self.http = http
        self.inp = inp
        self.job_id = inp.job_id
        self.jobs = settings.jobs
        self.sync = settings.sync
        self.config: dict[str, Any] = {}
        # A batch's rows are saved in one transaction: a row that fails fails at once.
        self.saver = run.saver(_no_reply, max_attempts=1)
        self._check_job = RowCancelCheck(
            pool, inp.job_id, self.jobs.heartbeat_interval, first_now=True
        )

    async def run(self) -> SyncProcessResult:
        async with self.pool.connection() as conn:
            self.config = await pipelines.job_config(conn, self.job_id)
        size = batch_size(self.config)
        state = resume_details(SyncCheckpoint) or SyncCheckpoint()
        resumed = state.last_ordinal
        async with heartbeating(self.jobs.heartbeat_interval, lambda: state):
            while True:
                await self._check_job()
                async with self.pool.connection() as conn:
                    rows = await captures.image_page(
                        conn, self.job_id, state.last_ordinal, size, pending_only=True
                    )
                if not rows:
                    break
                outcome, failed = await self._batch(rows)
                state = SyncCheckpoint(
                    last_ordinal=rows[-1]["ordinal"],
                    batches=state.batches + 1,
                    failed_batches=state.failed_batches + failed,
                )
                await self.ml.apply(outcome)
                await self.ml.maybe_write_progress()
            # Heartbeating still: on big tables the final counts outlast the heartbeat timeout.
            await self.ml.finish()
        await self.ml.log(
            f"Sent {state.batches} batches of up to {size} images to {self.inp.service.name}"
            f" ({state.failed_batches} failed)"
            + (f", resumed after ordinal {resumed}" if resumed else ""),
            context=state.model_dump(),
        )
        return SyncProcessResult(
            counters=self.ml.counters, batches=state.batches, failed_batches=state.failed_batches
        )

    async def _batch(self, rows: list[dict[str, Any]]) -> tuple[BatchOutcome, int]:
        """Post one batch and save what came back (or the failure), in one transaction: the
        answer goes through the inbox like an ADC result, so it is saved the same way."""
        failed = {r["source_image_id"]: NO_URL_ERROR for r in rows if not r["url"]}
        sent = [r for r in rows if r["url"]]
        ids = {r["source_image_id"] for r in sent}
        error = ""
        answer: str | None = None
        if sent:
            request = PipelineRequest(
                pipeline=self.ml.pipeline.slug,
                source_images=[
                    SourceImageRequest(id=str(r["source_image_id"]), url=r["url"]) for r in sent
                ],
                config=self.config,
            )
            response, error = await self._post(request)
            if response is not None:
                answer = _only(response, ids).model_dump_json(exclude=NOT_STORED)
                answered = images_named(response)
                missing = error or "missing from the service's answer"
                failed |= dict.fromkeys(ids - answered, missing)
            else:
                failed |= dict.fromkeys(ids, error)
        async with self.pool.connection() as conn, conn.transaction():
            outcome = BatchOutcome()
            if answer is not None:
                entry = InboxEntry(image_id=None, reply_subject="", is_error=False, payload=answer)
                row_ids = await inbox.store(conn, self.job_id, [entry])
                outcome = await self.saver.save_batch(conn, 1, failed, ids=row_ids)
            elif failed:
                outcome = await record_parsed(
                    conn,
                    self.job_id,
                    self.ml.project_id,
                    self.ml.pipeline,
                    ParsedResults(failed=failed),
                )
        if error:
            await self.ml.log(
                f"Batch of {len(sent)} images failed: {error}",
                level="ERROR",
                context={
                    "image_ids": sorted(r["source_image_id"] for r in sent)[:LOGGED_IMAGE_IDS]
                },
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
        base = self.sync.retry_backoff.total_seconds()
        error = ""
        for attempt in range(1, attempts + 1):
            try:
                response = await self.http.post(
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
                await asyncio.sleep(backoff.delay(attempt, base))
        return None, f"{error} (after {attempts} attempts)"


async def _no_reply(_: str) -> int | None:
    """/process answers have no reply subject: their images are named in them."""
    return None


def _only(response: PipelineResultsResponse, ids: set[int]) -> PipelineResultsResponse:
    """The answer restricted to the images the batch asked for: never save or fail another."""
    return response.model_copy(
        update={
            "source_images": [s for s in response.source_images if image_id(s.id) in ids],
            "detections": [d for d in response.detections if image_id(d.source_image_id) in ids],
        }
    )

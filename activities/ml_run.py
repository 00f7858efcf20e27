"""What one attempt of an ML run's saving work shares, whatever brings the results: the async
aggregator (results posted by pull workers, activities/async_api) and the SYNC_API batch runner
(answers of a push service, activities/sync_api).

It loads what the run needs (the pipeline, the run's counters, the job's progress), saves
batches through the BatchSaver, keeps the counters, writes the progress (throttled, single
writer per job, only while this run owns the job) and the throughput lines, and tells Antenna's
cache and crop worker after each commit. The final status is not decided here: finalize_job does
that once the run's work is done.
"""

from __future__ import annotations

import time
from typing import Any

from activities.crops import CropRequests
from activities.result_saver import BatchOutcome, BatchSaver, Resolver
from antenna_db import cachalot, counts, job_store, pipelines
from antenna_db.pipelines import PipelineContext
from core.counters import AggregateCounters
from core.errors import Failure, failure
from core.metrics import RESULTS_SAVED
from core.ml_progress import apply_counters, throughput_line
from core.progress import WORKERS_KEY, JobProgress
from core.settings import JobSettings
from storage import job_runs
from storage.pool import Pool

# Throughput lines go to the job log at most this often (progress is written more often).
THROUGHPUT_EVERY = 10.0
# The process stage's param while no processing worker polls the job's pipeline, and its value.
WORKERS_PARAM = WORKERS_KEY
WAITING_FOR_WORKERS = "waiting for workers"
# Per run, the failed images listed one by one in the job's errors as Antenna lists them (one
# ERROR line per image with the worker's error); past that, one summary line at the end of the
# run gives the count, so a job whose every image fails does not write a line per image.
ERROR_LINES_PER_RUN = 100
# A worker's error is cut to this many characters in its line.
ERROR_TEXT_MAX = 1000
# A log line about many images names at most this many of them in its context (a sample; the
# message gives the count).
LOGGED_IMAGE_IDS = 10


def pipeline_error_prefix(job_id: int) -> str:
    return f"Pipeline returned error for job {job_id}, image "


def pipeline_error_line(job_id: int, image_id: int, error: str) -> str:
    """Antenna's wording (ami/jobs/tasks.py process_nats_pipeline_result), at ERROR."""
    text = error if len(error) <= ERROR_TEXT_MAX else error[:ERROR_TEXT_MAX] + "..."
    return f"{pipeline_error_prefix(job_id)}{image_id}: {text}"


class MlRun:
    def __init__(
        self, pool: Pool, jobs: JobSettings, crops: CropRequests, job_id: int, run_id: str
    ) -> None:
        self.pool = pool
        self.jobs = jobs
        self.crops = crops
        self.job_id = job_id
        self.run_id = run_id
        self.counters = AggregateCounters()
        self.progress = JobProgress()
        self.pipeline = PipelineContext(slug="")
        self.project_id = 0
        self.consumer = ""
        self.started = time.monotonic()
        self.last_change = self.started
        self.last_progress = 0.0
        self.last_throughput = self.started
        self.last_counts = self.started
        self.dirty = True
        # Results saved since the last throughput line / counts refresh: a waiting job writes
        # neither (nothing changed).
        self.unlogged = False
        self.uncounted = False
        # Failed images of this run listed in the job's errors so far (read back on a retried
        # attempt), and whether any went unlisted past ERROR_LINES_PER_RUN.
        self.errors_listed = 0
        self.errors_unlisted = False

    async def load(self) -> None:
        """The run's state as Postgres has it (the truth on every attempt: a retried one never
        counts twice). An attempt of a run that no longer owns the job stops here."""
        async with self.pool.connection() as conn:
            self.pipeline = await pipelines.load(conn, self.job_id)
            run = await job_runs.get(conn, self.job_id)
            job = await job_store.get_job(conn, self.job_id)
            if run is None or run.run_id != self.run_id:
                raise self.stale()
            self.errors_listed = await job_store.count_logs_since_run(
                conn,
                self.job_id,
                "ERROR",
                pipeline_error_prefix(self.job_id),
                ERROR_LINES_PER_RUN,
            )
        self.errors_unlisted = self.errors_listed >= ERROR_LINES_PER_RUN
        self.counters, self.consumer = run.counters, run.consumer
        self.progress, self.project_id = job.progress, job.project_id

    def stale(self) -> Exception:
        return failure(
            Failure.STALE_RUN, f"job {self.job_id} was started again: this attempt's run is over"
        )

    def saver(self, resolve: Resolver, max_attempts: int | None = None) -> BatchSaver:
        extra = {} if max_attempts is None else {"max_attempts": max_attempts}
        return BatchSaver(self.job_id, self.project_id, self.pipeline, resolve, **extra)

    async def apply(self, outcome: BatchOutcome) -> bool:
        """After a batch committed: its refusals logged, Antenna told, the counters moved;
        True if any image moved."""
        for where, reason in outcome.refusals():
            await self.log(f"Result for {where} refused: {reason}", level="ERROR")
        await self._list_errors(outcome.errors)
        cachalot.wrote(*outcome.tables)
        self.crops.new_detections(outcome.need_crops)
        if not outcome.moved:
            return False
        RESULTS_SAVED.labels("processed").inc(len(outcome.processed))
        RESULTS_SAVED.labels("failed").inc(len(outcome.failed))
        self.counters = self.counters.model_copy(
            update={
                "processed": self.counters.processed + len(outcome.processed),
                "failed": self.counters.failed + len(outcome.failed),
                "detections": self.counters.detections + outcome.detections,
                "classifications": self.counters.classifications + outcome.classifications,
            }
        )
        self.last_change = time.monotonic()
        self.dirty = self.unlogged = self.uncounted = True
        return True

    async def _list_errors(self, errors: dict[int, str]) -> None:
        """One ERROR line per image the worker failed, up to ERROR_LINES_PER_RUN in the run."""
        room = max(ERROR_LINES_PER_RUN - self.errors_listed, 0)
        images = sorted(errors)
        lines = [pipeline_error_line(self.job_id, i, errors[i]) for i in images[:room]]
        self.errors_unlisted = self.errors_unlisted or len(images) > room
        if lines:
            async with self.pool.connection() as conn:
                await job_store.append_logs(conn, self.job_id, lines, level="ERROR")
            self.errors_listed += len(lines)

    async def _summarise_errors(self) -> None:
        """The one line that counts what the per-image lines left out."""
        failed, total = self.counters.failed, self.counters.total
        if not self.errors_unlisted or failed <= self.errors_listed:
            return
        await self.log(
            f"{failed} of {total} images failed; only the first {self.errors_listed} errors the"
            f" pipeline returned are listed ({failed - self.errors_listed} failed images not"
            " listed one by one)",
            level="ERROR",
            context={"failed": failed, "listed": self.errors_listed},
        )

    def set_waiting_for_workers(self, waiting: bool) -> None:
        """The process stage's ``workers`` param (Antenna's stage panel shows it) says "waiting
        for workers" while no worker polls; it is removed once one does, so a job with workers
        keeps exactly Antenna's params. Written with the next progress write."""
        self.progress.update_stage("process")  # a row written elsewhere may lack the stage
        stage = self.progress.stage("process")
        stage.params = [p for p in stage.params if p.key != WORKERS_PARAM]
        if waiting:
            stage.set_param(WORKERS_PARAM, WAITING_FOR_WORKERS)
        self.dirty = True

    async def reload_counters(self) -> None:
        """Counters from Postgres (another attempt may have saved batches meanwhile)."""
        async with self.pool.connection() as conn:
            run = await job_runs.get(conn, self.job_id)
        if run is not None and run.counters != self.counters:
            self.counters = run.counters
            self.last_change = time.monotonic()
            self.dirty = True

    async def maybe_write_progress(self) -> None:
        """Progress at most every progress_interval; a throughput line every 10 s or so; the
        sessions' and stations' counts every counts_interval."""
        now = time.monotonic()
        if self.dirty and now - self.last_progress >= self.jobs.progress_interval.total_seconds():
            await self.write_progress()
        every = max(THROUGHPUT_EVERY, self.jobs.progress_interval.total_seconds())
        if self.unlogged and now - self.last_throughput >= every:
            self.last_throughput = now
            self.unlogged = False
            await self.log(throughput_line(self.counters, now - self.started))
        if self.uncounted and now - self.last_counts >= self.jobs.counts_interval.total_seconds():
            await self.refresh_counts()

    async def write_progress(self) -> None:
        self.progress = apply_counters(self.progress, self.counters)
        async with self.pool.connection() as conn:
            await job_store.save_progress(conn, self.job_id, self.progress, run_id=self.run_id)
        self.last_progress = time.monotonic()
        self.dirty = False

    async def refresh_counts(self) -> None:
        self.last_counts = time.monotonic()
        self.uncounted = False
        async with self.pool.connection() as conn:
            await counts.refresh_job_counts(conn, self.job_id, self.project_id)

    async def finish(self) -> None:
        """The last counts written; the sessions' and stations' counts refreshed; the count of
        failed images not listed one by one, if any were left out."""
        await self.write_progress()
        await self.refresh_counts()
        await self._summarise_errors()

    async def log(
        self, message: str, *, level: str = "INFO", context: dict[str, Any] | None = None
    ) -> None:
        async with self.pool.connection() as conn:
            await job_store.append_log(conn, self.job_id, message, level=level, context=context)

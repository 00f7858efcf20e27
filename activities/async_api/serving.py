"""The workers serving a job, as its aggregator tells them: the process stage's ``serving`` and
``eta`` params (Antenna's stage panel shows them) and a job log line when a worker goes idle.

Fed by the per-interval watch read (activities/async_api/inbox_watch.py), so it costs no query
of its own; the params change at most every SERVING_EVERY seconds (they carry rates and ages
that move on every read, and each change is a progress write). "Worker ... started fetching
tasks" is logged by the API when it first records the worker (api/worker_tally.py).
"""

from __future__ import annotations

import time

from activities.ml_run import MlRun
from core import worker_calls
from core.progress import ETA_KEY, SERVING_KEY
from core.settings import JobSettings
from core.worker_calls import JobWorker
from storage import job_workers

SERVING_EVERY = 10.0


class ServingNote:
    def __init__(self, run: MlRun, jobs: JobSettings) -> None:
        self.ml = run
        self.window = jobs.workers_seen_window.total_seconds()
        self.idle_after = jobs.worker_idle_after.total_seconds()
        self.last = float("-inf")

    async def note(self, workers: list[JobWorker]) -> None:
        for worker in workers:
            if worker.idle >= self.idle_after and not worker.idle_noted:
                async with self.ml.pool.connection() as conn:
                    said = await job_workers.note_idle(conn, self.ml.job_id, worker.worker)
                if said:
                    await self.ml.log(
                        f"Worker {worker.label} idle for {worker_calls.duration(worker.idle)}"
                        f" (last call {worker.last_call:%Y-%m-%d %H:%M:%S %Z}, fetched"
                        f" {worker.tasks} tasks, posted {worker.results} results)",
                        level="WARNING",
                        context={"worker": worker.worker, "idle_seconds": worker.idle},
                    )
        now = time.monotonic()
        if now - self.last < SERVING_EVERY:
            return
        self.last = now
        self.show(workers)

    def show(self, workers: list[JobWorker]) -> None:
        """Set (or drop) the params; written with the next progress write."""
        self.ml.progress.update_stage("process")
        stage = self.ml.progress.stage("process")
        text = worker_calls.summary(workers, self.window)
        counters = self.ml.counters
        rate = worker_calls.recent_rate(workers, self.window)
        eta = worker_calls.eta(counters.total - counters.done, rate) if counters.total else None
        changed = False
        if text:
            changed |= stage.param(SERVING_KEY) != text
            stage.set_param(SERVING_KEY, text, name="Workers serving")
        else:
            changed |= stage.drop_param(SERVING_KEY)
        if eta is not None and text:
            value = f"{worker_calls.duration(eta)} at {rate:.1f} img/s"
            changed |= stage.param(ETA_KEY) != value
            stage.set_param(ETA_KEY, value, name="ETA")
        else:
            changed |= stage.drop_param(ETA_KEY)
        if changed:
            self.ml.dirty = True

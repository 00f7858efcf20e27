"""Waiting out a change of Antenna's schema that refuses our saves (issue 17).

A save refused for a schema reason is no row's fault: the batch rolled back and its results stay
in the inbox, no image is failed, nothing is counted against a row. The job log says once what
is wrong (table, column, the database's words), the run's row says it for ``antenna-jobs status``
and /metrics, a schema check runs (its differences go to the worker's log), and saves are tried
again with a growing pause (1 s, 2 s, 4 s, ... up to ``schema_retry_max``) until one succeeds:
then the log says so and the job carries on by itself.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import Any

import psycopg

from activities.ml_run import MlRun
from activities.result_saver import SchemaBlocked
from antenna_db.schema_check import schema_reason
from core.metrics import SCHEMA_REFUSALS
from storage import job_runs

FIRST_PAUSE = 1.0

log = logging.getLogger("antenna_jobs.schema")


class SchemaWait:
    def __init__(
        self, run: MlRun, retry_max: float, request_check: Callable[[], None] | None = None
    ) -> None:
        self.run = run
        self.retry_max = retry_max
        self.request_check = request_check
        # The fault that keeps saves waiting (None: saving), since when, and the next pause.
        self.fault: str | None = None
        self.since = 0.0
        self.pause = FIRST_PAUSE
        self.refusals = 0

    @property
    def blocked(self) -> bool:
        return self.fault is not None

    async def refused(self, err: SchemaBlocked) -> float:
        """A save was refused for a schema reason: said once (again if the reason changes);
        returns how long to wait before the next try."""
        SCHEMA_REFUSALS.labels(err.fault.table or "").inc()
        self.refusals += 1
        described = err.fault.describe()
        if described != self.fault:
            first = self.fault is None
            self.fault = described
            if first:
                self.since = time.monotonic()
                self.pause = FIRST_PAUSE
            async with self.run.pool.connection() as conn:
                await job_runs.set_schema_error(conn, self.run.job_id, described)
            await self._log(
                f"Results cannot be saved: Antenna's schema changed ({described})."
                " They stay in the inbox, no image is failed; saving is tried again with"
                f" backoff (up to every {self.retry_max:.0f} s) until the schema is compatible"
                " (upgrade antenna-jobs, or give the column a default)",
                level="ERROR",
                context={
                    "table": err.fault.table,
                    "column": err.fault.column,
                    "error": err.fault.error,
                },
            )
            if self.request_check is not None:
                self.request_check()
        pause = self.pause
        self.pause = min(self.pause * 2, self.retry_max)
        # The stall rule never counts this wait: results are here, only the schema is not.
        self.run.last_change = time.monotonic()
        return pause

    async def saved(self) -> None:
        """A save went through: if it had been waiting, say so and clear the run's row."""
        if self.fault is None:
            return
        waited = time.monotonic() - self.since
        self.fault = None
        self.pause = FIRST_PAUSE
        async with self.run.pool.connection() as conn:
            await job_runs.set_schema_error(conn, self.run.job_id, None)
        await self._log(
            f"Results are saved again: Antenna's schema is compatible (waited {waited:.0f} s,"
            f" {self.refusals} refused tries)"
        )
        self.refusals = 0

    async def _log(self, message: str, **kwargs: Any) -> None:
        """The job log, unless the schema change is the job log's own (jobs_joblog): then the
        worker's log has it, and the wait goes on."""
        try:
            await self.run.log(message, **kwargs)
        except psycopg.Error as err:
            if schema_reason(err) is None:
                raise
            log.error("job %s: %s (the job log refused it: %s)", self.run.job_id, message, err)

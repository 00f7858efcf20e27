"""Activities that meet a schema error say so (issue 17): an activity interceptor.

An activity whose statement Antenna's changed schema refuses (collect, publish, a status write...)
is retried by Temporal with the workflow's backoff (1 s up to 60 s) for as long as it takes, as
before; what is new is that it is never silent: the job log says once what is wrong (the table,
the column, the database's words), ``antenna_jobs_schema_refusals`` counts every attempt, and
the worker's schema check runs at once (its differences go to the worker's log). The error goes
back to Temporal as a retryable ApplicationError of type ``ANTENNA_SCHEMA_CHANGED`` naming it.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

from temporalio import activity
from temporalio.exceptions import ApplicationError
from temporalio.worker import (
    ActivityInboundInterceptor,
    ExecuteActivityInput,
    Interceptor,
)

from antenna_db import job_store
from antenna_db.schema_check import SchemaFault, schema_reason
from core.metrics import SCHEMA_REFUSALS
from storage.pool import Pool

log = logging.getLogger("antenna_jobs.schema")

SCHEMA_CHANGED = "ANTENNA_SCHEMA_CHANGED"
# Faults already told per (job, activity): bounded, a long-lived worker forgets old ones.
_REMEMBERED = 10_000


class SchemaErrorInterceptor(Interceptor):
    def __init__(self, pool: Pool, request_check: Callable[[], None] | None = None) -> None:
        self.pool = pool
        self.request_check = request_check
        self._told: set[tuple[int | None, str, str]] = set()

    def intercept_activity(self, next: ActivityInboundInterceptor) -> ActivityInboundInterceptor:
        return _Inbound(next, self)

    async def refused(self, activity_type: str, job_id: int | None, fault: SchemaFault) -> None:
        SCHEMA_REFUSALS.labels(fault.table or "").inc()
        key = (job_id, activity_type, fault.describe())
        if key in self._told:
            return
        if len(self._told) >= _REMEMBERED:
            self._told.clear()
        self._told.add(key)
        log.error("%s of job %s refused by Antenna's schema: %s", activity_type, job_id, fault)
        if self.request_check is not None:
            self.request_check()
        if job_id is None:
            return
        try:
            async with self.pool.connection() as conn:
                await job_store.append_log(
                    conn,
                    job_id,
                    f"{activity_type} refused because Antenna's schema changed"
                    f" ({fault.describe()}); retried with backoff until the schema is"
                    " compatible (upgrade antenna-jobs, or give the column a default)",
                    level="ERROR",
                    context={"table": fault.table, "column": fault.column, "error": fault.error},
                )
        except Exception as err:  # the log is a courtesy: the retry goes on without it
            log.warning("could not write the job log of job %s: %s", job_id, err)


def _job_id(args: Any) -> int | None:
    first = args[0] if args else None
    value = getattr(first, "job_id", None)
    if value is None and isinstance(first, dict):
        value = first.get("job_id")
    return value if isinstance(value, int) else None


class _Inbound(ActivityInboundInterceptor):
    def __init__(self, next: ActivityInboundInterceptor, outer: SchemaErrorInterceptor) -> None:
        super().__init__(next)
        self.outer = outer

    async def execute_activity(self, input: ExecuteActivityInput) -> Any:
        try:
            return await super().execute_activity(input)
        except Exception as err:
            fault = schema_reason(err)
            if fault is None:
                raise
            activity_type = activity.info().activity_type
            await self.outer.refused(activity_type, _job_id(input.args), fault)
            raise ApplicationError(
                f"Antenna's schema changed: {fault.describe()}",
                {"table": fault.table, "column": fault.column, "error": fault.error},
                type=SCHEMA_CHANGED,
            ) from err

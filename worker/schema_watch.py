"""The worker's schema check after start: Antenna's tables against the manifest again every
``schema_check_interval``, and at once when an activity met a schema error (``request()``).

A running worker does not stop on a failed check (its saves wait in the inbox and its activities
retry with backoff, each job saying why in its log): the differences go to the worker's log and
``antenna_jobs_schema_problems``, so the operator sees them before and after the fix.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging

import psycopg

from antenna_db import schema_check
from core.metrics import SCHEMA_PROBLEMS
from core.settings import DatabaseSettings

log = logging.getLogger("antenna_jobs.schema")


class SchemaWatch:
    def __init__(self, database: DatabaseSettings, interval: float) -> None:
        self.database = database
        self.interval = interval
        self._wake = asyncio.Event()
        self.last: schema_check.SchemaReport | None = None

    def request(self) -> None:
        """Check again now (an activity met a schema error)."""
        self._wake.set()

    async def check(self) -> schema_check.SchemaReport | None:
        try:
            async with await psycopg.AsyncConnection.connect(
                self.database.url, autocommit=True
            ) as conn:
                report = await schema_check.check(conn, self.database.schema_name)
        except psycopg.Error as err:
            log.warning("schema check could not run: %s", err)
            return None
        SCHEMA_PROBLEMS.set(len(report.problems))
        if report.problems:
            log.error(
                "Antenna's schema no longer matches the manifest (saves wait, activities retry):"
                " %s",
                report.describe(),
            )
        self.last = report
        return report

    async def run(self) -> None:
        """Until cancelled."""
        while True:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), self.interval)
            self._wake.clear()
            await self.check()

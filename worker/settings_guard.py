"""A worker refuses to serve a task queue that workers of other settings already serve.

Two deployments sharing a Temporal namespace are kept apart by their task queues and name
prefixes. A worker started on another deployment's task queue by mistake (another database,
schema or name prefix) would take that deployment's workflow and activity tasks and run them
against the wrong database or names: jobs failed JobNotFound, tasks published to streams the
API never reads. Nothing in the databases can tell (they are different databases), so the
workers tell each other through what both see, Temporal itself:

- every worker polls with an ``identity`` (shown in the Web UI and ``temporal task-queue
  describe``) that carries a fingerprint of the settings that must agree:
  ``<pid>@<host> antenna-jobs/1 db=<hash> schema=<hash> jobs_schema=<hash> prefix=<prefix>``;
- before it polls, a starting worker asks Temporal for the recent pollers of its task queues
  (``DescribeTaskQueue``) and compares their fingerprints with its own; any difference ends the
  start with ``SettingsConflict`` naming the setting;
- once its own polls show, it asks again: two workers of other settings that started in the
  same second both passed the first check, and both stop here (a poll or two of theirs may
  have taken a task by then: the check narrows that window, it cannot close it).

The database is identified by what the server says (storage/server.py: its cluster's system
identifier and the database name), not by the URL, so two spellings of one database's URL (a
host name and its address, another password) agree. Pollers without a fingerprint (another
program, an older antenna-jobs) are not compared. Temporal lists a poller for minutes after it
stopped: only those seen within ``LIVE_WITHIN`` count (a poll lasts up to a minute), so a
deployment restarted with changed settings starts once its old workers are that long gone.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import os
import re
import socket
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from temporalio.api.enums.v1 import TaskQueueType
from temporalio.api.taskqueue.v1 import TaskQueue
from temporalio.api.workflowservice.v1 import DescribeTaskQueueRequest
from temporalio.client import Client

from core.errors import AntennaJobsError
from core.settings import Settings
from storage import server

log = logging.getLogger("antenna_jobs.worker")

# A polling worker renews its poll at least once a minute (Temporal's long-poll expiry).
LIVE_WITHIN = timedelta(seconds=90)

_IDENTITY = re.compile(
    r" antenna-jobs/1 db=(?P<database>[0-9a-f]+) schema=(?P<schema>[0-9a-f]+)"
    r" jobs_schema=(?P<jobs_schema>[0-9a-f]+) prefix=(?P<prefix>[A-Za-z0-9_-]*)$"
)
# The setting that differs, as the operator sets it.
SETTING_NAMES = {
    "database": "ANTENNA_JOBS_DATABASE_URL",
    "schema": "ANTENNA_JOBS_DATABASE_SCHEMA",
    "jobs_schema": "ANTENNA_JOBS_DATABASE_JOBS_SCHEMA",
    "prefix": "ANTENNA_JOBS_NAME_PREFIX",
}


def _hash(value: str) -> str:
    return hashlib.sha256(value.encode()).hexdigest()[:12]


@dataclass(frozen=True)
class Fingerprint:
    """The settings workers of one task queue must share (hashed, but for the name prefix, so
    an identity shows no database or schema name)."""

    database: str
    schema: str
    jobs_schema: str
    prefix: str

    @classmethod
    def of(cls, database_identity: str, settings: Settings) -> Fingerprint:
        db = settings.database
        return cls(
            database=_hash(database_identity),
            schema=_hash(db.schema_name),
            jobs_schema=_hash(db.jobs_schema),
            prefix=settings.jobs.name_prefix,
        )

    def identity(self, who: str | None = None) -> str:
        """A worker identity carrying this fingerprint (``who``: Temporal's usual pid@host)."""
        who = who or f"{os.getpid()}@{socket.gethostname()}"
        return (
            f"{who} antenna-jobs/1 db={self.database} schema={self.schema}"
            f" jobs_schema={self.jobs_schema} prefix={self.prefix}"
        )

    @classmethod
    def from_identity(cls, identity: str) -> Fingerprint | None:
        found = _IDENTITY.search(identity)
        return cls(**found.groupdict()) if found else None

    def differences(self, other: Fingerprint) -> list[str]:
        """The fields (see SETTING_NAMES) on which ``other`` differs, in a stable order."""
        return [name for name in SETTING_NAMES if getattr(self, name) != getattr(other, name)]


class SettingsConflict(AntennaJobsError):
    """A worker of other settings serves this worker's task queue: it must not start."""

    def __init__(
        self, task_queue: str, other: str, seen: timedelta, settings: list[str], ours: Settings
    ) -> None:
        self.task_queue = task_queue
        self.other = other
        self.settings = settings
        ago = f"{seen.total_seconds():.0f} s ago"
        ours_shown = {
            "database": "another database",
            "schema": f"ours {ours.database.schema_name!r}",
            "jobs_schema": f"ours {ours.database.jobs_schema!r}",
            "prefix": f"ours {ours.jobs.name_prefix!r}",
        }
        theirs = Fingerprint.from_identity(other)
        if theirs is not None:
            ours_shown["prefix"] += f", theirs {theirs.prefix!r}"
        named = "; ".join(f"{SETTING_NAMES[s]} differs ({ours_shown[s]})" for s in settings)
        super().__init__(
            f"refusing to start: task queue {task_queue!r} is served by worker {other!r}"
            f" (polled {ago}) with other settings: {named}. Workers of one task queue must"
            " share the database, schemas and name prefix; give this deployment its own"
            " ANTENNA_JOBS_TASK_QUEUE, or the same settings as that worker"
        )


async def fingerprint_of(settings: Settings) -> Fingerprint:
    return Fingerprint.of(await server.database_identity(settings.database.url), settings)


async def check_task_queues(client: Client, settings: Settings, mine: Fingerprint) -> None:
    """Raise SettingsConflict if a live poller of one of this worker's task queues (workflow
    and activity pollers of the main queue, activity pollers of the long one) carries another
    fingerprint."""
    queues = [
        (settings.jobs.task_queue, TaskQueueType.TASK_QUEUE_TYPE_WORKFLOW),
        (settings.jobs.task_queue, TaskQueueType.TASK_QUEUE_TYPE_ACTIVITY),
        (settings.jobs.long_task_queue, TaskQueueType.TASK_QUEUE_TYPE_ACTIVITY),
    ]
    now = datetime.now(UTC)
    for queue, kind in queues:
        described = await client.workflow_service.describe_task_queue(
            DescribeTaskQueueRequest(
                namespace=client.namespace, task_queue=TaskQueue(name=queue), task_queue_type=kind
            )
        )
        for poller in described.pollers:
            seen = max(now - poller.last_access_time.ToDatetime(tzinfo=UTC), timedelta(0))
            if seen > LIVE_WITHIN:
                continue
            theirs = Fingerprint.from_identity(poller.identity)
            if theirs is None:
                log.info("task queue %s: %r has no settings fingerprint", queue, poller.identity)
                continue
            differ = mine.differences(theirs)
            if differ:
                raise SettingsConflict(queue, poller.identity, seen, differ, settings)


async def recheck_after_start(
    client: Client,
    settings: Settings,
    mine: Fingerprint,
    identity: str,
    *,
    within: timedelta = timedelta(seconds=15),
) -> None:
    """check_task_queues again once this worker's own polls show on its main task queue (or
    after ``within``, whichever is first)."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + within.total_seconds()
    request = DescribeTaskQueueRequest(
        namespace=client.namespace,
        task_queue=TaskQueue(name=settings.jobs.task_queue),
        task_queue_type=TaskQueueType.TASK_QUEUE_TYPE_WORKFLOW,
    )
    while loop.time() < deadline:
        described = await client.workflow_service.describe_task_queue(request)
        if any(poller.identity == identity for poller in described.pollers):
            break
        await asyncio.sleep(0.2)
    await check_task_queues(client, settings, mine)

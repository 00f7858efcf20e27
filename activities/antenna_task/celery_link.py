"""Antenna's Celery, as Antenna's own code talks to it: send ``run_job``, revoke a task with
terminate, ask the workers which of them holds a task, and how many messages wait in a queue.

Everything goes through a Celery app of our own on Antenna's broker (so messages are Celery's
own: protocol 2, JSON; control requests are Celery's broadcasts on the ``celery.pidbox``
exchange, which every worker of the broker receives). Celery's client calls block: each runs in
a thread (its producer pool is thread-safe; each control request opens a connection of its own),
so one job's slow control request never holds another job's revoke back.
"""

from __future__ import annotations

import asyncio
from typing import Any

from celery import Celery

from bridge.celery_app import CeleryApp
from core.errors import BrokerNotConfigured
from core.settings import AntennaSettings

RUN_JOB_TASK = "ami.jobs.tasks.run_job"
# States query_task reports for a task a worker holds (received, prefetched, running).
HELD_STATES = frozenset({"active", "reserved", "scheduled"})


class AntennaCelery(CeleryApp):
    """A broker outage fails the attempt fast (Celery's short publish retry); Temporal retries
    it."""

    def __init__(self, settings: AntennaSettings) -> None:
        # Antenna compresses its task messages; its workers read either.
        super().__init__("antenna-jobs-tasks", settings.broker_url, task_compression="gzip")
        self._settings = settings

    def _require(self) -> Celery:
        if self._app is None:
            raise BrokerNotConfigured()
        return self._app

    async def _call(self, fn: Any, *args: Any) -> Any:
        return await asyncio.to_thread(fn, *args)

    async def send_run_job(self, job_id: int, task_id: str) -> None:
        """``run_job(job_id=...)`` with this task id, to the task queue (Antenna's ``antenna`` by
        default: its worker there has every task registered)."""
        await self._call(self._send, job_id, task_id)

    def _send(self, job_id: int, task_id: str) -> None:
        # By name: declared as Celery declares a queue it routes to (as Antenna's own is).
        self._require().send_task(
            RUN_JOB_TASK,
            kwargs={"job_id": job_id},
            task_id=task_id,
            queue=self._settings.task_queue,
        )

    async def revoke(self, task_id: str) -> None:
        """Antenna's Job.cancel: ``revoke(task_id, terminate=True)``; the worker running it
        SIGTERMs the child process, and any worker that gets the message later drops it."""
        await self._call(self._revoke, task_id)

    def _revoke(self, task_id: str) -> None:
        self._require().control.revoke(task_id, terminate=True, signal="SIGTERM")

    async def holders(self, task_id: str) -> tuple[int, list[str]]:
        """(workers that answered, the ones holding the task) within the control timeout."""
        answered, held = await self._call(self._holders, task_id)
        return int(answered), list(held)

    def _holders(self, task_id: str) -> tuple[int, list[str]]:
        timeout = self._settings.control_timeout.total_seconds()
        replies = self._require().control.inspect(timeout=timeout).query_task(task_id) or {}
        held = [
            worker
            for worker, tasks in replies.items()
            if isinstance(tasks, dict)
            and isinstance(tasks.get(task_id), list | tuple)
            and tasks[task_id]
            and tasks[task_id][0] in HELD_STATES
        ]
        return len(replies), held

    async def waiting(self) -> int:
        """Messages ready in the task queue (0 if it does not exist yet)."""
        return int(await self._call(self._waiting))

    def _waiting(self) -> int:
        queue = self._settings.task_queue
        with self._require().connection_for_write() as conn:
            channel = conn.default_channel
            try:
                _name, ready, _consumers = channel.queue_declare(queue=queue, passive=True)
            except conn.channel_errors:
                return 0  # NOT_FOUND closes the channel; the pool replaces it
        return int(ready)

"""Reserving task messages from a job's durable pull consumer, for ``POST /jobs/{id}/tasks/``.

One NATS connection per process. Each concurrent request borrows a pull subscription of its own
(bound to the run's durable consumer; binding costs one SUB, no API call), so the server's pull
requests, not client code, decide who gets which message: concurrent requests never receive the
same task. Subscriptions are kept per job between requests rather than created and dropped per
request as Antenna does: a message the server delivers just after a fetch gave up then waits in
the subscription for the next request instead of being stranded until ``ack_wait`` expires.
"""

from __future__ import annotations

import logging
from collections import OrderedDict, deque
from dataclasses import dataclass, field

import nats.errors
import nats.js.errors
from nats.aio.client import Client as NatsClient
from nats.aio.msg import Msg
from nats.js import JetStreamContext

from core.errors import TaskQueueUnavailable
from core.naming import Names
from core.settings import NatsSettings

log = logging.getLogger(__name__)

MAX_JOBS = 512
MAX_IDLE_SUBSCRIPTIONS_PER_JOB = 16

PullSubscription = JetStreamContext.PullSubscription


@dataclass
class _JobSubscriptions:
    # The run's consumer these subscriptions are bound to, and the run: every run's consumer
    # has the same name, and what an earlier run's subscriptions hold is of no use to the next.
    consumer: str
    run_id: str | None = None
    idle: list[PullSubscription] = field(default_factory=list)
    # Messages delivered beyond what a request asked for; handed out first, next time.
    spare: deque[Msg] = field(default_factory=deque)


class TaskFetcher:
    def __init__(
        self,
        nc: NatsClient,
        settings: NatsSettings,
        names: Names,
        max_jobs: int = MAX_JOBS,
        max_idle: int = MAX_IDLE_SUBSCRIPTIONS_PER_JOB,
    ) -> None:
        self._nc = nc
        self._names = names
        self._js = nc.jetstream(timeout=settings.request_timeout.total_seconds())
        self._fetch_timeout = settings.fetch_timeout.total_seconds()
        self._jobs: OrderedDict[int, _JobSubscriptions] = OrderedDict()
        self._max_jobs = max_jobs
        self._max_idle = max_idle

    async def fetch(
        self, job_id: int, consumer: str, batch: int, *, run_id: str | None = None
    ) -> list[Msg]:
        """Up to ``batch`` reserved messages of the run's ``consumer``; [] if the job has no
        stream or consumer (yet). ``run_id``: the run, so that a new run never gets messages an
        earlier run's subscriptions kept.

        Raises TaskQueueUnavailable when NATS is disconnected or answers with an error.
        """
        if not self._nc.is_connected:
            raise TaskQueueUnavailable(job_id)
        try:
            subs = await self._job(job_id, consumer, run_id)
            if subs is None:
                return []
            taken = await self._take_spare(subs, batch)
            if len(taken) < batch:
                taken += await self._fetch(job_id, subs, batch - len(taken))
        except nats.js.errors.NotFoundError:
            await self.forget(job_id)
            return []
        except (nats.errors.Error, OSError) as err:
            log.warning("task fetch for job %s failed: %r", job_id, err)
            raise TaskQueueUnavailable(job_id) from err
        if len(taken) > batch:
            # Only after a lingering delivery piled up in a subscription: keep, don't drop.
            subs.spare.extend(taken[batch:])
            taken = taken[:batch]
        return taken

    async def forget(self, job_id: int) -> None:
        """Drop a job's subscriptions (the job is final or its consumer is gone)."""
        subs = self._jobs.pop(job_id, None)
        if subs is not None:
            await self._unsubscribe_all(subs)

    async def close(self) -> None:
        while self._jobs:
            _, subs = self._jobs.popitem()
            await self._unsubscribe_all(subs)

    async def _job(
        self, job_id: int, consumer: str, run_id: str | None
    ) -> _JobSubscriptions | None:
        subs = self._jobs.get(job_id)
        if subs is not None and (subs.consumer, subs.run_id) == (consumer, run_id):
            self._jobs.move_to_end(job_id)
            return subs
        if subs is not None:
            # The job was started again: the old run's subscriptions are of no use.
            await self.forget(job_id)
        # First request for this run in this process: check the consumer exists, so an absent
        # one answers [] at once instead of after a fetch timeout.
        await self._js.consumer_info(self._names.stream(job_id), consumer)
        subs = self._jobs.setdefault(job_id, _JobSubscriptions(consumer, run_id))
        while len(self._jobs) > self._max_jobs:
            _, old = self._jobs.popitem(last=False)
            await self._unsubscribe_all(old)
        return subs

    async def _take_spare(self, subs: _JobSubscriptions, batch: int) -> list[Msg]:
        taken: list[Msg] = []
        while subs.spare and len(taken) < batch:
            msg = subs.spare.popleft()
            # Restart its ack_wait clock: the worker gets the full time from now.
            await msg.in_progress()
            taken.append(msg)
        return taken

    async def _fetch(self, job_id: int, subs: _JobSubscriptions, batch: int) -> list[Msg]:
        sub = subs.idle.pop() if subs.idle else await self._bind(job_id, subs.consumer)
        # fetch() first drains everything already buffered in the subscription, then asks the
        # server for the rest; asking for fewer than it buffered would send a pull request for
        # zero or fewer messages. Ask for at least one more: any surplus becomes spare.
        want = max(batch, sub.pending_msgs + 1)
        keep = False
        try:
            try:
                msgs = await sub.fetch(want, timeout=self._fetch_timeout)
            except TimeoutError:
                msgs = []
            keep = True
            return msgs
        finally:
            # A subscription whose fetch failed may hold a half-finished pull: never reuse it.
            tracked = self._jobs.get(job_id) is subs
            if keep and tracked and (len(subs.idle) < self._max_idle or sub.pending_msgs):
                subs.idle.append(sub)
            else:
                await _unsubscribe(sub)

    async def _bind(self, job_id: int, consumer: str) -> PullSubscription:
        return await self._js.pull_subscribe_bind(
            durable=consumer, stream=self._names.stream(job_id)
        )

    async def _unsubscribe_all(self, subs: _JobSubscriptions) -> None:
        for sub in subs.idle:
            await _unsubscribe(sub)
        subs.idle.clear()


async def _unsubscribe(sub: PullSubscription) -> None:
    try:
        await sub.unsubscribe()
    except (nats.errors.Error, ValueError) as err:
        log.debug("unsubscribe failed: %r", err)

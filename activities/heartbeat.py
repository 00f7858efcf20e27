"""A background heartbeater, so a cancel reaches an activity even while it awaits SQL or NATS.

Temporal delivers a cancel only as the answer to a heartbeat; a long statement or a long wait
would otherwise hide the cancel (and a missed heartbeat turns it into a timeout).
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from datetime import timedelta
from typing import TypeVar

from pydantic import BaseModel
from temporalio import activity

Details = Callable[[], BaseModel | None]
M = TypeVar("M", bound=BaseModel)


def heartbeat(details: BaseModel | None = None) -> None:
    """Heartbeat with JSON-able details (they come back as plain dicts on a retry anyway)."""
    if details is None:
        activity.heartbeat()
    else:
        activity.heartbeat(details.model_dump(mode="json"))


@asynccontextmanager
async def heartbeating(every: timedelta, details: Details | None = None) -> AsyncIterator[None]:
    """Heartbeat every ``every`` with the latest ``details()`` while the block runs."""

    async def beat() -> None:
        while True:
            heartbeat(details() if details else None)
            await asyncio.sleep(every.total_seconds())

    # create_task copies the activity context, so activity.heartbeat() works in the helper.
    task = asyncio.create_task(beat())
    try:
        yield
    finally:
        # Not awaited: awaiting here could swallow a cancel aimed at the activity itself.
        task.cancel()


def resume_details(model: type[M]) -> M | None:
    """The last checkpoint of a retried attempt, re-validated; None on a first attempt.

    Details come back untyped (plain dicts); a checkpoint that no longer validates is dropped
    and the attempt starts over, which every step after a checkpoint tolerates (idempotent).
    """
    details = activity.info().heartbeat_details
    if not details:
        return None
    try:
        return model.model_validate(details[0])
    except ValueError:
        activity.logger.warning("ignoring invalid heartbeat details %r", details[0])
        return None


def run_id() -> str:
    """The workflow run the running activity works for."""
    found = activity.info().workflow_run_id
    if not found:
        raise RuntimeError("not an activity of a workflow run")
    return found

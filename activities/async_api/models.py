"""Inputs, outputs and heartbeat checkpoints of the async_api activities (publish, aggregate).

Imported by the workflow (through ``imports_passed_through``): pydantic models only, no I/O.
"""

from __future__ import annotations

from pydantic import BaseModel, NonNegativeInt

from activities.models import Checkpoint, RunInput
from core.counters import AggregateCounters


class PublishInput(RunInput):
    pass


class PublishCheckpoint(Checkpoint):
    """Heartbeat details of publish_tasks: everything up to last_ordinal has its acks."""

    published: NonNegativeInt = 0
    no_url: NonNegativeInt = 0


class PublishResult(BaseModel):
    published: NonNegativeInt
    no_url: NonNegativeInt
    seconds: float


class AggregateInput(RunInput):
    pass


class AggregateResult(BaseModel):
    counters: AggregateCounters
    # Images counted failed by reconciliation (max_deliver exhausted or the stall period).
    reconciled: NonNegativeInt = 0
    stalled: bool = False

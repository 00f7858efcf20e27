"""Inputs, outputs and heartbeat checkpoints of the async_api activities (publish, aggregate).

Imported by the workflow (through ``imports_passed_through``): pydantic models only, no I/O.
"""

from __future__ import annotations

from pydantic import BaseModel, NonNegativeInt

from core.counters import AggregateCounters


class PublishInput(BaseModel):
    job_id: int
    total: NonNegativeInt


class PublishCheckpoint(BaseModel):
    """Heartbeat details of publish_tasks: everything up to last_ordinal has its acks."""

    last_ordinal: NonNegativeInt = 0
    published: NonNegativeInt = 0
    no_url: NonNegativeInt = 0


class PublishResult(BaseModel):
    published: NonNegativeInt
    no_url: NonNegativeInt
    seconds: float


class AggregateInput(BaseModel):
    job_id: int
    total: NonNegativeInt


class AggregateResult(BaseModel):
    counters: AggregateCounters
    # Images counted failed by reconciliation (max_deliver exhausted or the stall period).
    reconciled: NonNegativeInt = 0
    stalled: bool = False

"""Inputs, outputs and checkpoints of the SYNC_API activities (pydantic only: the workflow
imports this module)."""

from __future__ import annotations

from pydantic import BaseModel, NonNegativeInt

from activities.models import Checkpoint, RunInput
from core.counters import AggregateCounters


class ServiceChoice(BaseModel):
    service_id: int
    name: str
    endpoint_url: str
    latency: float


class SyncProcessInput(RunInput):
    service: ServiceChoice


class SyncCheckpoint(Checkpoint):
    """Heartbeat details of process_sync_batches: every batch up to last_ordinal is saved."""

    batches: NonNegativeInt = 0
    failed_batches: NonNegativeInt = 0


class SyncProcessResult(BaseModel):
    counters: AggregateCounters
    batches: NonNegativeInt
    failed_batches: NonNegativeInt

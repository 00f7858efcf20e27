"""Inputs, outputs and checkpoints of the INTERNAL job activities (populate_captures_collection,
data_export). Pydantic only: the workflow imports this module."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, Field, NonNegativeInt


class InternalResult(BaseModel):
    """What an internal job produced: ``result`` becomes jobs.result, ``summary`` a log line."""

    result: dict[str, Any] = Field(default_factory=dict)
    summary: str = ""


class FinishInput(BaseModel):
    job_id: int
    result: dict[str, Any] = Field(default_factory=dict)
    summary: str = ""


class RemoveExportInput(BaseModel):
    job_id: int
    # The job ended SUCCESS: its finished file stays, only leftovers go.
    keep_final: bool = False


class ExportCheckpoint(BaseModel):
    """Heartbeat details of export_data: the partial file holds exactly ``bytes`` bytes for every
    detection up to ``last_id`` (flushed before the checkpoint is recorded)."""

    last_id: NonNegativeInt = 0
    records: NonNegativeInt = 0
    rows: NonNegativeInt = 0
    bytes: NonNegativeInt = 0
    total: NonNegativeInt = 0

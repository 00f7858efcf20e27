"""A job's image and result counts: what its progress shows and its final status is decided on."""

from __future__ import annotations

from pydantic import BaseModel, NonNegativeInt


class AggregateCounters(BaseModel):
    """Counts of the job's images and saved results; also the aggregator's heartbeat details."""

    total: NonNegativeInt = 0
    processed: NonNegativeInt = 0  # successful results saved
    failed: NonNegativeInt = 0
    detections: NonNegativeInt = 0
    classifications: NonNegativeInt = 0

    @property
    def done(self) -> int:
        return self.processed + self.failed

    @property
    def remaining(self) -> int:
        return max(0, self.total - self.done)

"""A job's image and result counts: what its progress shows and its final status is decided on."""

from __future__ import annotations

from pydantic import BaseModel, NonNegativeInt

from core.states import JobState


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

    def final_status(self, threshold: float) -> JobState:
        """FAILURE when more than ``threshold`` of the images failed (Antenna's
        FAILURE_THRESHOLD), else SUCCESS: the one place an ML job's end is decided."""
        if self.total and self.failed / self.total > threshold:
            return JobState.FAILURE
        return JobState.SUCCESS

    def outcome_line(self, threshold: float) -> str:
        return f"{self.failed} of {self.total} images failed (threshold {threshold:.0%})"

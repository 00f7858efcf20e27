"""What the bridge tells the rest of antenna-jobs: its view of the broker (a BridgeReport, kept in
table ``bridge_reports`` by storage/bridge_reports.py, one row per jobs queue) and each message it
dead-letters.
"""

from __future__ import annotations

from dataclasses import dataclass

from storage.bridge_reports import BridgeReport

__all__ = ["BridgeReport", "DeadLetter"]


@dataclass(frozen=True)
class DeadLetter:
    """A message the bridge gave up on (job_id None: it named no readable job)."""

    job_id: int | None
    task_id: str | None
    reason: str
    attempts: int

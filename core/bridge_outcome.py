"""What the bridge did with one run_job message (shared by the consumer and JobActions)."""

from __future__ import annotations

from enum import StrEnum


class BridgeOutcome(StrEnum):
    STARTED = "started"  # a new run of the job's workflow
    ALREADY_RUNNING = "already_running"  # joined the run in progress (a duplicate message)
    FINAL = "final"  # the job is SUCCESS/FAILURE/REVOKED: a stale message, nothing started
    CANCELING = "canceling"  # the job is being cancelled: nothing started
    MISSING = "missing"  # no such job

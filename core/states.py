"""Job states and the sets of them that decide who may do what (Antenna's JobState)."""

from __future__ import annotations

from enum import StrEnum


class JobState(StrEnum):
    CREATED = "CREATED"
    PENDING = "PENDING"
    STARTED = "STARTED"
    SUCCESS = "SUCCESS"
    FAILURE = "FAILURE"
    RETRY = "RETRY"
    CANCELING = "CANCELING"
    REVOKED = "REVOKED"
    RECEIVED = "RECEIVED"
    UNKNOWN = "UNKNOWN"


FINAL_STATES = frozenset({JobState.SUCCESS, JobState.FAILURE, JobState.REVOKED})
# Only these are served tasks by POST /tasks/.
ACTIVE_STATES = frozenset({JobState.STARTED, JobState.RETRY})
# A workflow may move a job to STARTED only from these.
STARTABLE_STATES = frozenset({JobState.CREATED, JobState.PENDING, JobState.RETRY})
# Guarded terminal transitions (SUCCESS/FAILURE) only from these (antenna#1337).
FINALIZABLE_STATES = frozenset(
    {JobState.CREATED, JobState.PENDING, JobState.STARTED, JobState.RETRY}
)
CANCELABLE_STATES = FINALIZABLE_STATES
REVOCABLE_STATES = FINALIZABLE_STATES | {JobState.CANCELING}
RETRYABLE_STATES = frozenset({JobState.FAILURE, JobState.REVOKED})


class DispatchMode(StrEnum):
    INTERNAL = "internal"
    SYNC_API = "sync_api"
    ASYNC_API = "async_api"


class JobType(StrEnum):
    ML = "ml"
    POPULATE_CAPTURES_COLLECTION = "populate_captures_collection"
    DATA_EXPORT = "data_export"


class ImageStatus(StrEnum):
    """State of one image of a job's image set (job_images.status)."""

    PENDING = "pending"
    PROCESSED = "processed"
    FAILED = "failed"

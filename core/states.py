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
# A job row in one of these (written by our cancel paths, or by Antenna's UI) stops its work.
CANCEL_STATES = frozenset({JobState.CANCELING, JobState.REVOKED})
# Jobs the overview (`status`, /metrics) lists as running: Antenna's running_states() less UNKNOWN.
RUNNING_STATES = frozenset({JobState.PENDING, JobState.STARTED, JobState.RETRY, JobState.CANCELING})


class DispatchMode(StrEnum):
    INTERNAL = "internal"
    SYNC_API = "sync_api"
    ASYNC_API = "async_api"


class JobType(StrEnum):
    """Antenna's job_type_key values (VALID_JOB_TYPES); RUN_JOB_TYPES are the ones run here."""

    ML = "ml"
    POPULATE_CAPTURES_COLLECTION = "populate_captures_collection"
    DATA_EXPORT = "data_export"
    DATA_STORAGE_SYNC = "data_storage_sync"
    REGROUP_EVENTS = "regroup_events"
    POST_PROCESSING = "post_processing"
    UNKNOWN = "unknown"

    @classmethod
    def as_found(cls, value: str) -> JobType:
        """The job type a row holds, also one Antenna added after this code was written: then a
        JobType of that value that is none of the members (so it is shown as it is, and is in
        no set of types run here). ``JobType(value)`` stays strict, for what users send."""
        try:
            return cls(value)
        except ValueError:
            found = str.__new__(cls, value)
            found._name_ = value.upper()
            found._value_ = value
            return found

    @property
    def known(self) -> bool:
        """One of the members (not a type only found in a row)."""
        return self._value_ in type(self)._value2member_map_


RUN_JOB_TYPES = frozenset({JobType.ML, JobType.POPULATE_CAPTURES_COLLECTION, JobType.DATA_EXPORT})


def run_permission(job_type: JobType, single_image: bool = False) -> str:
    """Antenna's codename for running, retrying and cancelling a job of this type."""
    if job_type == JobType.ML:
        return "run_single_image_ml_job" if single_image else "run_ml_job"
    return f"run_{job_type.value}_job"

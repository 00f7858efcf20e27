"""The one place where names of workflows, streams, subjects, consumers and Redis keys are made."""

from __future__ import annotations

import re

from core.states import DispatchMode, JobType

JOB_WORKFLOW = "JobWorkflow"
SYNC_JOB_WORKFLOW = "SyncJobWorkflow"
INTERNAL_JOB_WORKFLOW = "InternalJobWorkflow"
RECONCILE_WORKFLOW = "ReconcileJobsWorkflow"
CANCEL_SIGNAL = "cancel"
PROGRESS_QUERY = "progress"

_WORKFLOW_ID = re.compile(r"^job-(\d+)$")
_STREAM = re.compile(r"^job_(\d+)$")
_REDIS_KEY = re.compile(r"^job:(\d+):")


def workflow_type(job_type: JobType, dispatch_mode: DispatchMode) -> str:
    """The workflow that runs a job: ML jobs by dispatch mode, every other type internally."""
    if job_type != JobType.ML:
        return INTERNAL_JOB_WORKFLOW
    return SYNC_JOB_WORKFLOW if dispatch_mode == DispatchMode.SYNC_API else JOB_WORKFLOW


def workflow_id(job_id: int) -> str:
    return f"job-{job_id}"


def job_id_from_workflow_id(value: str) -> int | None:
    match = _WORKFLOW_ID.match(value)
    return int(match.group(1)) if match else None


def reconcile_schedule_id(task_queue: str) -> str:
    """One reconcile Schedule per task queue (so deployments sharing a namespace stay apart)."""
    return f"reconcile-{task_queue}"


def reconcile_workflow_id(task_queue: str) -> str:
    return f"reconcile-jobs-{task_queue}"


def stream_name(job_id: int) -> str:
    return f"job_{job_id}"


def job_id_from_stream(name: str) -> int | None:
    match = _STREAM.match(name)
    return int(match.group(1)) if match else None


def redis_key_pattern() -> str:
    """SCAN pattern matching every job's Redis keys."""
    return "job:*"


def job_id_from_redis_key(key: str) -> int | None:
    match = _REDIS_KEY.match(key)
    return int(match.group(1)) if match else None


def subject(job_id: int) -> str:
    return f"job.{job_id}.tasks"


def consumer_name(job_id: int) -> str:
    return f"job-{job_id}-consumer"


def ack_prefix(job_id: int) -> str:
    """Reply subjects of this job's task messages all start with this."""
    return f"$JS.ACK.{stream_name(job_id)}.{consumer_name(job_id)}."


def max_deliveries_advisory(job_id: int) -> str:
    return (
        f"$JS.EVENT.ADVISORY.CONSUMER.MAX_DELIVERIES.{stream_name(job_id)}.{consumer_name(job_id)}"
    )


def pending_key(job_id: int, stage: str) -> str:
    return f"job:{job_id}:pending_images:{stage}"


def failed_key(job_id: int) -> str:
    return f"job:{job_id}:failed_images"


def total_key(job_id: int) -> str:
    return f"job:{job_id}:pending_images_total"


def redis_keys(job_id: int) -> list[str]:
    return [
        pending_key(job_id, "process"),
        pending_key(job_id, "results"),
        failed_key(job_id),
        total_key(job_id),
    ]

"""The one place where names of workflows, schedules, streams, subjects, consumers and Redis keys
are made (and parsed back)."""

from __future__ import annotations

import re
from dataclasses import dataclass

from core.states import DispatchMode, JobType

JOB_WORKFLOW = "JobWorkflow"
SYNC_JOB_WORKFLOW = "SyncJobWorkflow"
INTERNAL_JOB_WORKFLOW = "InternalJobWorkflow"
ANTENNA_TASK_WORKFLOW = "AntennaTaskWorkflow"
RECONCILE_WORKFLOW = "ReconcileJobsWorkflow"
# The job workflow's signals (JobWorkflow.pause and .resume), which job_control sends, and every
# job workflow's cancel signal, which operators send with `temporal workflow signal --name cancel`.
PAUSE_SIGNAL = "pause"
RESUME_SIGNAL = "resume"
CANCEL_SIGNAL = "cancel"


def workflow_type(
    job_type: JobType, dispatch_mode: DispatchMode, *, antenna_tasks: bool = False
) -> str:
    """The workflow that runs a job: ML jobs by dispatch mode (an ML row left at ``internal`` is
    run on the sync path, as Antenna's MLJob.run does). Every other type, including the ones we
    do not know: in Antenna mode (``antenna_tasks``) Antenna's own code on its Celery worker,
    standalone our own implementations."""
    if job_type == JobType.ML:
        return JOB_WORKFLOW if dispatch_mode == DispatchMode.ASYNC_API else SYNC_JOB_WORKFLOW
    return ANTENNA_TASK_WORKFLOW if antenna_tasks else INTERNAL_JOB_WORKFLOW


# Every JetStream ack subject (a message's reply subject) starts with this:
_ACK = "$JS.ACK."
# $JS.ACK.<stream>.<consumer>.<delivered>.<stream seq>.<consumer seq>.<ts>.<pending>
_V1_TOKENS = 9
# $JS.ACK.<domain>.<account>.<stream>.<consumer>.<delivered>.<stream seq>.<consumer seq>.<ts>
#   .<pending>[.<random>]
_V2_MIN_TOKENS = 11


@dataclass(frozen=True)
class AckSubject:
    stream: str
    consumer: str
    stream_seq: int
    # The message's stored timestamp (ns since the epoch, the stream's clock): with the stream
    # sequence it names one message of one incarnation of the stream. A stream deleted and made
    # again (a new run of the job) numbers its messages from 1 again, but never with the same
    # timestamps.
    timestamp: int


def parse_ack_subject(reply_subject: str) -> AckSubject | None:
    """Stream, consumer, stream sequence and message timestamp of a JetStream ack subject
    (None: not one)."""
    if not reply_subject.startswith(_ACK):
        return None
    tokens = reply_subject.split(".")
    try:
        if len(tokens) == _V1_TOKENS:
            return AckSubject(tokens[2], tokens[3], int(tokens[5]), int(tokens[7]))
        if len(tokens) >= _V2_MIN_TOKENS:
            return AckSubject(tokens[4], tokens[5], int(tokens[7]), int(tokens[9]))
    except ValueError:
        return None
    return None


def stream_seq_from_reply(reply_subject: str) -> tuple[str, int] | None:
    """(stream, stream sequence) encoded in a JetStream ack subject, or None if it is not one."""
    found = parse_ack_subject(reply_subject)
    return (found.stream, found.stream_seq) if found else None


_PREFIX = re.compile(r"^[A-Za-z0-9_-]*$")


class Names:
    """Temporal ids, streams, subjects, consumers and Redis keys of one deployment.

    ``prefix`` keeps deployments that share a Temporal namespace, a NATS or a Redis apart: two
    databases both have a job 46, and only the prefix tells ``job-46`` of one from the other's.
    The default "" gives the names antenna-jobs always used: workflow ``job-{id}`` (a single
    deployment still finds the runs it started before prefixes existed), and Antenna's own names
    (``job_{id}``, ``job.{id}.tasks``, ``job-{id}-consumer``, ``job:{id}:...``), so Antenna's
    NATS clean-up of a cancelled job (Job.cancel deletes the consumer ``job-{id}-consumer``, then
    the stream, and writes an ERROR to the job for each one missing) finds exactly what it looks
    for.

    Every run of a job has a consumer of that one name (each run makes the stream anew), so
    the name does not tell runs apart: a late result of an earlier run is refused by its ack
    subject's message timestamp instead (``AckSubject.timestamp``: the API checks it against the
    message the current stream holds at that sequence, api/task_images.py), and a result is
    stored and acked only for the run the API read, once that run has collected its images
    (so the stream is that run's: antenna_db/job_store.py ``worker_view``).
    """

    def __init__(self, prefix: str = "") -> None:
        if not _PREFIX.match(prefix):
            raise ValueError(f"name prefix {prefix!r}: use letters, digits, '-' and '_' only")
        self.prefix = prefix
        self._stream = re.compile(rf"^{re.escape(prefix)}job_(\d+)$")
        self._redis_key = re.compile(rf"^{re.escape(prefix)}job:(\d+):")

    # --- Temporal ---

    def workflow_id(self, job_id: int) -> str:
        """The job's workflow: one id per job, every run of it (retries) under the same id."""
        return f"{self.prefix}job-{job_id}"

    def reconcile_schedule_id(self, task_queue: str) -> str:
        """One reconcile Schedule per deployment and task queue."""
        return f"{self.prefix}reconcile-{task_queue}"

    def reconcile_workflow_id(self, task_queue: str) -> str:
        return f"{self.prefix}reconcile-jobs-{task_queue}"

    # --- NATS and Redis ---

    def stream(self, job_id: int) -> str:
        return f"{self.prefix}job_{job_id}"

    def job_id_from_stream(self, name: str) -> int | None:
        match = self._stream.match(name)
        return int(match.group(1)) if match else None

    def subject(self, job_id: int) -> str:
        return f"{self.prefix}job.{job_id}.tasks"

    def consumer(self, job_id: int) -> str:
        """Antenna's consumer name (ami/ml/orchestration/nats_queue.py), the same for every run."""
        return f"{self.prefix}job-{job_id}-consumer"

    def ack_prefix(self, job_id: int, consumer: str | None = None) -> str:
        """Reply subjects of the messages delivered by ``consumer`` all start with this; of
        the messages of the job's stream (any consumer), the shorter one without it."""
        stream = f"{_ACK}{self.stream(job_id)}."
        return stream if consumer is None else f"{stream}{consumer}."

    def max_deliveries_advisory(self, job_id: int, consumer: str) -> str:
        return f"$JS.EVENT.ADVISORY.CONSUMER.MAX_DELIVERIES.{self.stream(job_id)}.{consumer}"

    def redis_key_pattern(self) -> str:
        """SCAN pattern matching every job's Redis keys of this deployment."""
        return f"{self.prefix}job:*"

    def job_id_from_redis_key(self, key: str) -> int | None:
        match = self._redis_key.match(key)
        return int(match.group(1)) if match else None

    def pending_key(self, job_id: int, stage: str) -> str:
        return f"{self.prefix}job:{job_id}:pending_images:{stage}"

    def failed_key(self, job_id: int) -> str:
        return f"{self.prefix}job:{job_id}:failed_images"

    def total_key(self, job_id: int) -> str:
        return f"{self.prefix}job:{job_id}:pending_images_total"

    def redis_keys(self, job_id: int) -> list[str]:
        return [
            self.pending_key(job_id, "process"),
            self.pending_key(job_id, "results"),
            self.failed_key(job_id),
            self.total_key(job_id),
        ]

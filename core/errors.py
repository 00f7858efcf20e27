"""Errors of antenna-jobs, each carrying the fields a caller needs.

AntennaJobsError
├── JobNotFound(job_id)
├── InvalidJobState(job_id, status, action)      refused: e.g. run a finished job
├── InvalidJobInput(field, message)              bad create parameters
└── TaskQueueUnavailable(job_id)                 NATS did not answer in time
"""

from __future__ import annotations


class AntennaJobsError(Exception):
    """Base of every error this project raises on purpose."""


class JobNotFound(AntennaJobsError):
    def __init__(self, job_id: int) -> None:
        super().__init__(f"job {job_id} does not exist")
        self.job_id = job_id


class InvalidJobState(AntennaJobsError):
    def __init__(self, job_id: int, status: str, action: str) -> None:
        super().__init__(f"cannot {action} job {job_id}: it is {status}")
        self.job_id = job_id
        self.status = status
        self.action = action


class InvalidJobInput(AntennaJobsError):
    def __init__(self, field: str, message: str) -> None:
        super().__init__(f"{field}: {message}")
        self.field = field
        self.message = message


class TaskQueueUnavailable(AntennaJobsError):
    def __init__(self, job_id: int) -> None:
        super().__init__(f"task queue of job {job_id} is temporarily unavailable")
        self.job_id = job_id

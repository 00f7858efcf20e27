"""Every workflow the worker runs: what it registers, and what replay checks replay against."""

from __future__ import annotations

from workflows.antenna_task_workflow import AntennaTaskWorkflow
from workflows.internal_job_workflow import InternalJobWorkflow
from workflows.job_workflow import JobWorkflow
from workflows.reconcile_workflow import ReconcileWorkflow
from workflows.sync_job_workflow import SyncJobWorkflow

WORKFLOWS: list[type] = [
    JobWorkflow,
    ReconcileWorkflow,
    SyncJobWorkflow,
    InternalJobWorkflow,
    AntennaTaskWorkflow,
]

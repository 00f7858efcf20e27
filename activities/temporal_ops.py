"""Temporal calls a workflow cannot make on itself.

A workflow that decides to stop (its ``cancel`` signal, or a job row saying CANCELING) asks the
server to cancel its own run, so the run takes the one cancel path and closes as CANCELED.
Workflow code cannot do this directly: a run's cancel request aimed at itself through an external
workflow handle is refused by the server (ExternalWorkflowExecutionNotFound, checked on the dev
server), and a CancelledError raised without a cancel request fails the run instead.
"""

from __future__ import annotations

from temporalio import activity
from temporalio.client import Client

from activities.models import SelfCancelInput


class TemporalActivities:
    def __init__(self, client: Client) -> None:
        self._client = client

    @activity.defn(name="request_cancel")
    async def request_cancel(self, inp: SelfCancelInput) -> None:
        handle = self._client.get_workflow_handle(inp.workflow_id, run_id=inp.run_id)
        await handle.cancel(reason=inp.reason)

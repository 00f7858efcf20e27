"""Will the installed code replay the runs that are open now? (``antenna-jobs replay``)

Before a deploy, every open run of ours (and, with ``since``, the runs closed that recently) is
fetched from Temporal and replayed on the workflow code installed here, as a new worker would
replay it after the deploy. A run whose replay fails would stop for ever on the new release (its
workflow tasks fail on every attempt): the check names each one.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

from temporalio.client import Client
from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.worker import Replayer


@dataclass(frozen=True)
class ReplayFailure:
    workflow_id: str
    run_id: str
    error: str


@dataclass
class ReplayReport:
    checked: int = 0
    failures: list[ReplayFailure] = field(default_factory=list)


def runs_query(workflow_types: Sequence[str], since: timedelta | None, now: datetime) -> str:
    """The visibility query of the runs to check: ours, open (or closed within ``since``)."""
    types = " OR ".join(f'WorkflowType = "{t}"' for t in workflow_types)
    which = 'ExecutionStatus = "Running"'
    if since is not None:
        after = (now - since).astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
        which = f'({which} OR CloseTime > "{after}")'
    return f"({types}) AND {which}"


async def replay_runs(
    client: Client, workflows: Sequence[type], since: timedelta | None = None
) -> ReplayReport:
    """Replays each matching run's history; the runs that failed, with the error."""
    names = [getattr(w, "__temporal_workflow_definition").name for w in workflows]
    query = runs_query(names, since, datetime.now(UTC))
    replayer = Replayer(workflows=list(workflows), data_converter=pydantic_data_converter)
    report = ReplayReport()
    histories = client.list_workflows(query).map_histories()
    async with replayer.workflow_replay_iterator(histories) as results:
        async for result in results:
            report.checked += 1
            if result.replay_failure is not None:
                history = result.history
                run_id = history.events[0].workflow_execution_started_event_attributes
                report.failures.append(
                    ReplayFailure(
                        workflow_id=history.workflow_id,
                        run_id=run_id.original_execution_run_id,
                        error=str(result.replay_failure),
                    )
                )
    return report

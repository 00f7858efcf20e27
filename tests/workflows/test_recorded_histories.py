"""The histories recorded by earlier releases replay on the current code (issue 18).

``tests/histories/<release>/`` holds the histories ``make record-histories`` recorded from real
runs of every path of every workflow with that release's code. A run started by a release may
still be open when the next one is deployed; the new workers then replay its history. Every
history committed there is replayed here on the workflows the worker registers now: a change
to a workflow's sequence of commands that is not behind ``workflow.patched()`` fails this test
and names the history it breaks.
"""

from __future__ import annotations

import asyncio
import subprocess
import sys
from collections.abc import AsyncIterator, Sequence
from pathlib import Path

import pytest
from temporalio import workflow
from temporalio.client import WorkflowHistory
from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.worker import Replayer

from activities.async_api.task_queue import TaskQueueActivities
from core import naming
from core.counters import AggregateCounters
from core.workflow_io import JobWorkflowInput, JobWorkflowResult
from tests.helpers import eventually
from tests.helpers.workflow_faults import WorkflowFaults
from workflows.job_workflow import JobWorkflow
from workflows.registry import WORKFLOWS

HISTORIES = Path(__file__).resolve().parents[1] / "histories"


def committed() -> list[Path]:
    return sorted(HISTORIES.glob("*/*.json"))


def load(path: Path) -> WorkflowHistory:
    return WorkflowHistory.from_json(f"{path.parent.name}/{path.stem}", path.read_text())


async def replay_failures(paths: Sequence[Path], workflows: Sequence[type]) -> dict[str, str]:
    """History (release/file) -> why its replay failed, for each that did."""

    async def histories() -> AsyncIterator[WorkflowHistory]:
        for path in paths:
            yield load(path)

    replayer = Replayer(workflows=list(workflows), data_converter=pydantic_data_converter)
    failures: dict[str, str] = {}
    async with replayer.workflow_replay_iterator(histories()) as results:
        async for result in results:
            if result.replay_failure is not None:
                failures[result.history.workflow_id] = str(result.replay_failure)
    return failures


def workflow_type(path: Path) -> str:
    """``<test file>__<test>__<workflow type>[__<n>]`` (tests/helpers/histories.py)."""
    return path.stem.split("__")[2]


def test_histories_are_committed_for_every_workflow() -> None:
    recorded = {workflow_type(p) for p in committed()}
    for w in WORKFLOWS:
        assert w.__temporal_workflow_definition.name in recorded  # type: ignore[attr-defined]


async def test_every_committed_history_replays_on_the_current_code() -> None:
    paths = committed()
    assert paths, f"no histories under {HISTORIES}"
    failures = await replay_failures(paths, WORKFLOWS)
    assert failures == {}, "\n".join(f"{name}: {why}" for name, why in failures.items())


@workflow.defn(name=naming.JOB_WORKFLOW, sandboxed=False)
class ResetAfterCollect(JobWorkflow):
    """The job workflow with one activity call moved: the queue reset after collect instead of
    before it. What a careless edit would do."""

    @workflow.run
    async def run(self, inp: JobWorkflowInput) -> JobWorkflowResult:
        return await self._run_job()

    async def _work(self) -> JobWorkflowResult:
        total = await self._collect()
        await self._run_step(TaskQueueActivities.reset_job_queue, self._job)
        return await self._finalize(AggregateCounters(total=total))


async def test_the_guard_fails_on_a_moved_activity_and_names_the_history(
    workflow_faults: WorkflowFaults,
) -> None:
    paths = [p for p in committed() if "success" in p.stem and workflow_type(p) == "JobWorkflow"]
    assert paths
    failures = await replay_failures(paths, [ResetAfterCollect])
    assert set(failures) == {f"{p.parent.name}/{p.stem}" for p in paths}
    assert all("nondetermin" in why.lower() for why in failures.values()), failures

    # The replays' own log lines (what fails a test when it happens unexpectedly) arrive
    # buffered: taken here, on purpose.
    async def logged() -> bool:
        return len(workflow_faults.found) >= len(paths)

    await eventually(logged, within=10)
    workflow_faults.take()


# A pytest of its own, with its own Temporal dev server: 20 s (tests/helpers/fast.py).
@pytest.mark.services
def test_the_recording_command_records_replayable_histories(tmp_path: Path) -> None:
    """`make record-histories` on a small scale, so it cannot rot: one test's run recorded by a
    pytest of its own, and the file it wrote replays."""
    root = Path(__file__).resolve().parents[2]
    target = tmp_path / "histories" / "next"
    test = "tests/workflows/test_replay_paths.py::test_success_replays"
    done = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", test,
         "--record-histories", str(target)],
        cwd=root, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    [path] = sorted(target.glob("*.json"))
    assert path.name == "test_replay_paths__test_success_replays__JobWorkflow.json"
    failures = asyncio.run(replay_failures([path], WORKFLOWS))
    assert failures == {}

"""Recording workflow histories from real test runs (issue 18): ``pytest --record-histories DIR``.

Every run of our workflows that a test started on the session's Temporal dev server and that has
closed by the end of the session is written to DIR as ``<test file>__<test>__<workflow
type>.json``, one history of each distinct shape (its sequence of events and activity types) per
test and workflow type. The tests they come from cover every path of every workflow (success,
failures, each cancel path in each phase, stall, pause and resume, failed-only retry, a worker
killed mid-aggregation, sync, internal, reconcile); ``make record-histories`` runs them into
``tests/histories/<release>/``, and tests/workflows/test_recorded_histories.py replays every
history committed there on the current code in every test run.
"""

from __future__ import annotations

import json
import re
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path

import pytest
import pytest_asyncio
from temporalio.api.enums.v1 import EventType
from temporalio.client import Client, WorkflowHistory
from temporalio.testing import WorkflowEnvironment

# Test node id -> when it started and ended (filled by the hooks below while recording).
_intervals: list[tuple[str, datetime, datetime | None]] = []


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption(
        "--record-histories",
        metavar="DIR",
        default=None,
        help="write the history of every closed workflow run of the session to DIR",
    )


def pytest_runtest_logstart(nodeid: str, location: object) -> None:
    _intervals.append((nodeid, datetime.now(UTC), None))


def pytest_runtest_logfinish(nodeid: str, location: object) -> None:
    if _intervals and _intervals[-1][0] == nodeid:
        _intervals[-1] = (nodeid, _intervals[-1][1], datetime.now(UTC))


def _test_of(started: datetime) -> str | None:
    for nodeid, begin, end in _intervals:
        if begin <= started and (end is None or started <= end):
            return nodeid
    return None


def file_stem(nodeid: str, workflow_type: str) -> str:
    path, _, name = nodeid.partition("::")
    test = re.sub(r"[^A-Za-z0-9_.-]+", "-", name).strip("-")
    return f"{Path(path).stem}__{test}__{workflow_type}"


def shape(history: WorkflowHistory) -> tuple[str, ...]:
    """What replay depends on: the events in order and the activities scheduled."""
    out: list[str] = []
    for event in history.events:
        if event.event_type == EventType.EVENT_TYPE_ACTIVITY_TASK_SCHEDULED:
            out.append(event.activity_task_scheduled_event_attributes.activity_type.name)
        else:
            out.append(EventType.Name(event.event_type))
    return tuple(out)


async def record(client: Client, workflow_types: set[str]) -> dict[str, str]:
    """The closed runs' histories to write: file name -> compact JSON."""
    files: dict[str, str] = {}
    seen: set[tuple[str, tuple[str, ...]]] = set()
    async for execution in client.list_workflows('ExecutionStatus != "Running"'):
        if execution.workflow_type not in workflow_types:
            continue
        nodeid = _test_of(execution.start_time)
        if nodeid is None:
            continue
        handle = client.get_workflow_handle(execution.id, run_id=execution.run_id)
        history = await handle.fetch_history()
        stem = file_stem(nodeid, execution.workflow_type)
        key = (stem, shape(history))
        if key in seen:
            continue
        seen.add(key)
        n = sum(1 for s, _ in seen if s == stem)
        name = stem if n == 1 else f"{stem}__{n}"
        files[f"{name}.json"] = json.dumps(json.loads(history.to_json()), separators=(",", ":"))
    return files


def write(target: Path, files: dict[str, str]) -> None:
    target.mkdir(parents=True, exist_ok=True)
    for name, text in files.items():
        (target / name).write_text(text + "\n")


@pytest_asyncio.fixture(scope="session")
async def _history_recorder(
    request: pytest.FixtureRequest, temporal_env: WorkflowEnvironment
) -> AsyncIterator[None]:
    from workflows.registry import WORKFLOWS

    yield
    target = Path(request.config.getoption("--record-histories"))
    types = {w.__temporal_workflow_definition.name for w in WORKFLOWS}  # type: ignore[attr-defined]
    files = await record(temporal_env.client, types)
    write(target, files)
    print(f"\nrecorded {len(files)} workflow histories in {target}")


@pytest.fixture(scope="session", autouse=True)
def _record_histories(request: pytest.FixtureRequest) -> None:
    # Only while recording: a run of unit tests starts no Temporal server for this.
    if request.config.getoption("--record-histories"):
        request.getfixturevalue("_history_recorder")

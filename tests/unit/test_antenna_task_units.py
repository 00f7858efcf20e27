"""Pure logic of the job types whose code is Antenna's: which workflow runs a job in Antenna mode
and standalone, the deterministic Celery task ids, a job type we do not know."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from typer.testing import CliRunner

from activities.antenna_task.runner import AntennaTaskActivities, task_id_for
from antenna_db.job_store import JobRecord
from antenna_db.job_tasks import TaskRow
from cli.main import app
from core import naming
from core.errors import BrokerNotConfigured
from core.settings import AntennaSettings, Settings
from core.states import DispatchMode, JobState, JobType

NOT_ML = [t for t in JobType if t != JobType.ML]


@pytest.mark.parametrize("job_type", NOT_ML)
def test_in_antenna_mode_every_type_but_ml_runs_antennas_own_code(job_type):
    assert (
        naming.workflow_type(job_type, DispatchMode.INTERNAL, antenna_tasks=True)
        == naming.ANTENNA_TASK_WORKFLOW
    )
    # Standalone: our own workflow (which runs populate and export, and refuses the rest).
    assert naming.workflow_type(job_type, DispatchMode.INTERNAL) == naming.INTERNAL_JOB_WORKFLOW


def test_ml_jobs_keep_their_workflows_in_antenna_mode():
    assert naming.workflow_type(JobType.ML, DispatchMode.ASYNC_API, antenna_tasks=True) == (
        naming.JOB_WORKFLOW
    )
    assert naming.workflow_type(JobType.ML, DispatchMode.SYNC_API, antenna_tasks=True) == (
        naming.SYNC_JOB_WORKFLOW
    )


def test_antenna_mode_is_having_antennas_broker():
    assert not AntennaSettings(broker_url=None).runs_antenna_tasks
    assert AntennaSettings(broker_url="amqp://guest:guest@127.0.0.1:5672//").runs_antenna_tasks
    assert AntennaSettings().task_queue == "antenna"


@pytest.mark.parametrize("command", [["bridge"], ["dead-letters", "list"]])
def test_what_needs_the_broker_names_the_setting_it_lacks(command: list[str]) -> None:
    with pytest.raises(BrokerNotConfigured, match="ANTENNA_JOBS_ANTENNA_BROKER_URL"):
        AntennaSettings(broker_url=None).require_broker_url()
    assert AntennaSettings(broker_url="amqp://x//").require_broker_url() == "amqp://x//"
    result = CliRunner().invoke(app, command, env={"ANTENNA_JOBS_ANTENNA_BROKER_URL": None})
    assert result.exit_code == 1
    assert "set ANTENNA_JOBS_ANTENNA_BROKER_URL" in result.output


def test_task_ids_are_the_same_for_every_attempt_of_one_send_and_new_for_the_next():
    first = task_id_for("job-7", "run-a", None)
    assert first == task_id_for("job-7", "run-a", None)
    again = task_id_for("job-7", "run-a", first)
    assert again == task_id_for("job-7", "run-a", first)
    assert len({first, again, task_id_for("job-7", "run-b", None)}) == 3


def _row(**values):
    now = datetime.now(UTC)
    base = {
        "id": 1,
        "name": "j",
        "project_id": 1,
        "pipeline_id": None,
        "collection_id": None,
        "job_type": "train_classifier",
        "dispatch_mode": "internal",
        "status": "CREATED",
        "progress": {"summary": {}, "stages": []},
        "params": None,
        "result": None,
        "limit": None,
        "shuffle": True,
        "created_at": now,
        "updated_at": now,
        "started_at": None,
        "finished_at": None,
    }
    return {**base, **values}


def test_a_job_type_antenna_added_after_us_reads_as_it_is():
    found = JobRecord.model_validate(_row()).job_type
    assert found.value == "train_classifier" and not found.known
    assert JobRecord.model_validate(_row(job_type="regroup_events")).job_type == (
        JobType.REGROUP_EVENTS
    )
    task = TaskRow(
        id=1,
        project_id=1,
        job_type_key="train_classifier",
        dispatch_mode=DispatchMode.INTERNAL,
        status=JobState.PENDING,
        task_id=None,
        updated_at=datetime.now(UTC),
    )
    assert task.job_type == JobType.UNKNOWN and task.job_type_key == "train_classifier"


class _Workers:
    """What the workers and the queue answer (a stub of AntennaCelery's two questions)."""

    def __init__(self, answered: int, held: list[str], waiting: int = 0, fails: bool = False):
        self.answer = (answered, held)
        self.ready = waiting
        self.fails = fails

    async def holders(self, task_id: str) -> tuple[int, list[str]]:
        if self.fails:
            raise ConnectionError("broker unreachable")
        return self.answer

    async def waiting(self) -> int:
        return self.ready


def _runner(workers: _Workers) -> AntennaTaskActivities:
    return AntennaTaskActivities(None, Settings(), workers)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("workers", "lost"),
    [
        (_Workers(answered=2, held=[]), True),
        # A worker holds it (received, prefetched or running): alive.
        (_Workers(answered=2, held=["w1"]), False),
        # Nobody answered (every worker down, or remote control off): no evidence, never resent.
        (_Workers(answered=0, held=[]), False),
        # A message waits in the task queue: maybe this one, behind others.
        (_Workers(answered=1, held=[], waiting=3), False),
        (_Workers(answered=1, held=[], fails=True), False),
    ],
)
async def test_a_task_counts_unseen_only_on_positive_evidence(workers, lost):
    since = await _runner(workers)._unseen_since("t", None, now=10.0)
    assert (since == 10.0) if lost else since is None
    # Unseen again later: the clock keeps its start; any doubt resets it.
    again = await _runner(workers)._unseen_since("t", 5.0, now=20.0)
    assert (again == 5.0) if lost else again is None

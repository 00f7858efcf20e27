"""One trace per job run (issue 19 item 4): a small job through the real API, the Temporal dev
server, in-process workers, Postgres, NATS and Redis, with the SDK's in-memory exporter. Its
spans form one tree, from the API's start through the workflow and its activities to each
/tasks/ and /result/ request and the batch saves, tagged with the job, project and pipeline."""

from __future__ import annotations

import pytest
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from temporalio.client import Client, WorkflowFailureError

from antenna_db import job_store
from antenna_db.seed import seed
from cli.fakes.results import result_document
from core import tracing
from core.schemas import PipelineProcessingTask
from core.states import JobState
from job_control.actions import JobActions
from tests.helpers import eventually
from tests.helpers.api import app_with_workers, start_over_api
from tests.helpers.broker import queue_fixture, running_consumer, send_run_job
from tests.helpers.db import NAMES, create_token
from tests.helpers.jobs import make_job
from tests.helpers.temporal import running_workers

__all__ = ["queue_fixture"]

IMAGES = 12


@pytest.fixture
def spans():
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    tracing.install(provider)
    try:
        yield exporter
    finally:
        tracing.shutdown()


def _tree(finished) -> dict[str, list]:
    """Spans by trace id."""
    traces: dict[str, list] = {}
    for span in finished:
        traces.setdefault(format(span.context.trace_id, "032x"), []).append(span)
    return traces


def render(spans, root, depth=0) -> list[str]:
    """The tree as indented lines (for the report, and a readable failure)."""
    keys = ("antenna_jobs.job_id", "antenna_jobs.project_id", "antenna_jobs.pipeline")
    shown = {k.split(".")[-1]: root.attributes[k] for k in keys if k in (root.attributes or {})}
    lines = [f"{'  ' * depth}{root.name} {shown}"]
    children = [s for s in spans if s.parent and s.parent.span_id == root.context.span_id]
    for child in sorted(children, key=lambda s: s.start_time):
        lines += render(spans, child, depth + 1)
    return lines


async def test_a_job_run_is_one_trace(settings, pool, temporal_client, spans):
    traced = Client(**{**temporal_client.config(), "interceptors": tracing.interceptors()})
    async with pool.connection() as conn:
        seeded = await seed(conn, IMAGES)
        key = await create_token(conn, "traces")
    slug = seeded.pipeline_slug
    async with app_with_workers(settings, pool, traced, key) as client:
        job_id = await start_over_api(client, seeded)

        async def work() -> bool:
            got = await client.post(f"/jobs/{job_id}/tasks/", json={"batch_size": 5})
            tasks = [PipelineProcessingTask.model_validate(t) for t in got.json()["tasks"]]
            if tasks:
                body = {"results": [result_document(t, slug, seed=3) for t in tasks]}
                assert (await client.post(f"/jobs/{job_id}/result/", json=body)).status_code == 200
            async with pool.connection() as conn:
                return await job_store.get_status(conn, job_id) == JobState.SUCCESS

        await eventually(work, within=120, interval=0.2)
        await traced.get_workflow_handle(NAMES.workflow_id(job_id)).result()

    finished = list(spans.get_finished_spans())
    mine = [
        trace
        for trace in _tree(finished).values()
        if any(s.attributes.get("antenna_jobs.job_id") == job_id for s in trace)
    ]
    assert len(mine) == 1, [sorted(s.name for s in t) for t in mine]
    (trace,) = mine
    ids = {s.context.span_id for s in trace}
    roots = [s for s in trace if s.parent is None or s.parent.span_id not in ids]
    tree = "\n".join(render(trace, roots[0])) if roots else ""
    print(f"\ntrace of job {job_id}:\n{tree}")
    assert len(roots) == 1, [s.name for s in roots]
    (root,) = roots
    assert root.name == "antenna_jobs.job.start"
    assert root.attributes["antenna_jobs.job_id"] == job_id
    assert root.attributes["antenna_jobs.project_id"] == seeded.project_id
    assert root.attributes["antenna_jobs.pipeline"] == slug
    names = [s.name for s in trace]
    for expected in (
        "StartWorkflow:",
        "RunWorkflow:",
        "StartActivity:start_job",
        "RunActivity:start_job",
        "RunActivity:aggregate_results",
        "POST /api/v2/jobs/{id}/tasks/",
        "POST /api/v2/jobs/{id}/result/",
        "antenna_jobs.results.save_batch",
    ):
        assert any(n.startswith(expected) for n in names), (expected, tree)
    ours = [
        s
        for s in trace
        if s.name.startswith(("antenna_jobs.", "POST ", "RunActivity:"))
        and s.name != "RunActivity:request_cancel"
    ]
    assert all(s.attributes.get("antenna_jobs.job_id") == job_id for s in ours), tree
    for s in trace:
        if s.name.startswith(("POST ", "antenna_jobs.")):
            assert s.attributes["antenna_jobs.project_id"] == seeded.project_id, s.name
    saves = [s for s in trace if s.name == "antenna_jobs.results.save_batch"]
    requests = [s for s in trace if s.name.startswith("POST ")]
    assert all(s.attributes["antenna_jobs.pipeline"] == slug for s in saves + requests)
    assert all(s.attributes["antenna_jobs.worker_user"] for s in requests)
    # Each result post's inbox rows were saved by a save span of the same trace.
    posted = {
        row
        for s in trace
        if s.name.startswith("POST /api/v2/jobs/{id}/result/")
        for row in s.attributes.get("antenna_jobs.inbox_row_ids", ())
    }
    saved = {row for s in saves for row in s.attributes.get("antenna_jobs.inbox_row_ids", ())}
    assert len(posted) == IMAGES and posted <= saved


def _trace_of(spans, job_id: int) -> list:
    mine = [
        trace
        for trace in _tree(spans.get_finished_spans()).values()
        if any(s.attributes.get("antenna_jobs.job_id") == job_id for s in trace)
    ]
    assert len(mine) == 1, [sorted(s.name for s in t) for t in mine]
    return mine[0]


async def test_the_bridge_message_starts_the_trace(settings, pool, temporal_client, spans, queue):
    """Antenna's run_job message through RabbitMQ: its span is the root of the run's trace."""
    traced = Client(**{**temporal_client.config(), "interceptors": tracing.interceptors()})
    async with pool.connection() as conn:
        seeded = await seed(conn, 3)
    job = (await make_job(pool, seeded=seeded, shuffle=False)).job
    async with pool.connection() as conn:
        assert await job_store.transition(conn, job.id, JobState.PENDING, [JobState.CREATED])
    actions = JobActions(pool, traced, settings)
    async with (
        running_workers(traced, settings),
        running_consumer(queue, actions.start_for_antenna),
    ):
        await send_run_job(queue, job.id)

        async def started() -> bool:
            async with pool.connection() as conn:
                return await job_store.get_status(conn, job.id) == JobState.STARTED

        await eventually(started, within=60)
        await actions.cancel(job.id, "test end")
        handle = traced.get_workflow_handle(NAMES.workflow_id(job.id))
        with pytest.raises(WorkflowFailureError):  # it closes as Canceled
            await handle.result()
    trace = _trace_of(spans, job.id)
    ids = {s.context.span_id for s in trace}
    roots = [s for s in trace if s.parent is None or s.parent.span_id not in ids]
    print(f"\nbridge trace of job {job.id}:\n" + "\n".join(render(trace, roots[0])))
    assert [s.name for s in roots] == ["antenna_jobs.bridge.run_job"]
    (start,) = [s for s in trace if s.name == "antenna_jobs.job.start"]
    assert start.parent.span_id == roots[0].context.span_id
    assert start.attributes["antenna_jobs.pipeline"] == seeded.pipeline_slug
    assert any(s.name == "RunActivity:start_job" for s in trace)


async def test_tracing_is_off_unless_configured(monkeypatch):
    from core.settings import TracingSettings

    for name in ("OTEL_EXPORTER_OTLP_ENDPOINT", "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT"):
        monkeypatch.delenv(name, raising=False)
    assert not TracingSettings().on
    assert tracing.configure(TracingSettings(), "test") is None
    assert not tracing.enabled() and tracing.interceptors() == []
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", "http://127.0.0.1:4318")
    assert TracingSettings().on
    assert TracingSettings(endpoint="http://127.0.0.1:4318").on
    assert not TracingSettings(enabled=False, endpoint="http://127.0.0.1:4318").on

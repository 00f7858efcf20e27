"""``antenna-jobs demo`` end to end as a real process: worker and API subprocesses, fake workers.

Everything the demo needs already answers (the shared services and the session's Temporal dev
server), so its ``up`` step starts nothing; it uses the session's schema and a task queue of
its own.
"""

from __future__ import annotations

import re

import pytest
from temporalio.service import RPCError, RPCStatusCode

from cli.stack import processes
from core.settings import Settings
from tests.helpers import eventually
from tests.helpers.processes import DEMO_FINAL_LINE, run_demo


@pytest.mark.slow
async def test_demo_runs_a_job_to_success_and_exits_0(
    settings: Settings, pool, tmp_path, temporal_client
):
    text = await run_demo(
        settings, tmp_path / "state", "--images", "40", "--workers", "2", "--error-rate", "0.1"
    )

    lines = text.strip().splitlines()
    match = DEMO_FINAL_LINE.match(lines[-1])
    assert match, lines[-1]
    job_id, detections, classifications = (int(g) for g in match.groups())
    assert "worker peak RSS:" in text
    assert f"/namespaces/default/workflows/job-{job_id}" in text

    async with pool.connection() as conn:
        cur = await conn.execute(
            "SELECT count(*) AS n FROM job_detections WHERE job_id = %s AND bbox_x1 IS NOT NULL",
            (job_id,),
        )
        assert (await cur.fetchone())["n"] == detections
        cur = await conn.execute("SELECT status FROM jobs_job WHERE id = %s", (job_id,))
        assert (await cur.fetchone())["status"] == "SUCCESS"
    assert classifications == detections  # one classification per detection
    # The demo stopped the worker and API it started.
    pids = [int(p) for p in re.findall(r"started (?:worker|api) \(pid (\d+)", text)]
    assert len(pids) == 2
    assert not [pid for pid in pids if processes.is_running(pid)]

    # Nothing left in the Temporal server it did not start: the worker's reconcile Schedule is
    # gone and no workflow of the demo's task queue runs on.
    queue = re.search(r"^task queue (antenna-jobs-demo-[0-9a-f]+)$", text, re.M)
    assert queue, text
    with pytest.raises(RPCError) as missing:
        await temporal_client.get_schedule_handle(f"reconcile-{queue[1]}").describe()
    assert missing.value.status == RPCStatusCode.NOT_FOUND
    assert f"removed from Temporal: schedule reconcile-{queue[1]}" in text

    async def none_running() -> bool:
        running = temporal_client.list_workflows(
            f'TaskQueue = "{queue[1]}" AND ExecutionStatus = "Running"'
        )
        return not [w async for w in running]

    await eventually(none_running, within=30)


@pytest.mark.slow
async def test_a_fresh_demo_runs_on_schemas_of_its_own_and_drops_them(
    settings: Settings, pool, tmp_path
):
    async def jobs_here() -> int:
        async with pool.connection() as conn:
            cur = await conn.execute("SELECT count(*) AS n FROM jobs_job")
            return int((await cur.fetchone())["n"])

    before = await jobs_here()
    text = await run_demo(settings, tmp_path / "state", "--images", "40", "--fresh")

    assert DEMO_FINAL_LINE.match(text.strip().splitlines()[-1]), text
    dropped = re.search(
        r"^dropped schemas (demo_[0-9a-f]{8}), (demo_[0-9a-f]{8}_jobs)$", text, re.M
    )
    assert dropped, text
    async with pool.connection() as conn:
        cur = await conn.execute(
            "SELECT nspname FROM pg_namespace WHERE nspname = ANY(%s)", (list(dropped.groups()),)
        )
        assert await cur.fetchall() == []
    assert await jobs_here() == before  # the configured schema saw nothing of it

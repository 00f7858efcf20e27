"""``antenna-jobs demo --mode sync`` as a real process: worker and fake push-mode service
subprocesses, one SYNC_API job, the same one-line summary as the async demo."""

from __future__ import annotations

import re

import pytest

from cli.stack import processes
from core.settings import Settings
from tests.helpers.processes import DEMO_FINAL_LINE, run_demo


@pytest.mark.slow
async def test_sync_demo_runs_a_job_to_success_and_exits_0(settings: Settings, pool, tmp_path):
    args = ["--mode", "sync", "--images", "40", "--batch-size", "3", "--error-rate", "0.1"]
    text = await run_demo(settings, tmp_path / "state", *args)

    match = DEMO_FINAL_LINE.match(text.strip().splitlines()[-1])
    assert match, text
    job_id, detections, classifications = (int(g) for g in match.groups())
    assert "fake-service peak RSS:" in text
    async with pool.connection() as conn:
        cur = await conn.execute(
            "SELECT status, dispatch_mode FROM jobs_job WHERE id = %s", (job_id,)
        )
        assert await cur.fetchone() == {"status": "SUCCESS", "dispatch_mode": "sync_api"}
        cur = await conn.execute(
            "SELECT count(*) AS n FROM job_detections WHERE job_id = %s AND bbox_x1 IS NOT NULL",
            (job_id,),
        )
        assert (await cur.fetchone())["n"] == detections > 0
    assert classifications == detections
    pids = [int(p) for p in re.findall(r"started (?:worker|fake-service) \(pid (\d+)", text)]
    assert len(pids) == 2
    assert not [pid for pid in pids if processes.is_running(pid)]

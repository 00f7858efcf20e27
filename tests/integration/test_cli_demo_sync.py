"""``antenna-jobs demo --mode sync`` as a real process: worker and fake push-mode service
subprocesses, one SYNC_API job, the same one-line summary as the async demo."""

from __future__ import annotations

import asyncio
import os
import re
import sys

import pytest

from cli.stack import processes
from core.settings import Settings
from tests.integration.test_cli_demo import FINAL


@pytest.mark.slow
async def test_sync_demo_runs_a_job_to_success_and_exits_0(settings: Settings, pool, tmp_path):
    env = {
        **os.environ,
        "ANTENNA_JOBS_DATABASE_SCHEMA": settings.database.schema_name,
        "ANTENNA_JOBS_DATABASE_JOBS_SCHEMA": settings.database.jobs_schema,
        "ANTENNA_JOBS_TEMPORAL_ADDRESS": settings.temporal.address,
        "ANTENNA_JOBS_STACK_STATE_DIR": str(tmp_path / "state"),
    }
    env.pop("ANTENNA_JOBS_TASK_QUEUE", None)
    command = ["-m", "cli", "demo", "--mode", "sync", "--images", "40", "--batch-size", "3"]
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        *command,
        "--error-rate",
        "0.1",
        env=env,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    out, _ = await asyncio.wait_for(proc.communicate(), 150)
    text = out.decode()
    assert proc.returncode == 0, text

    match = FINAL.match(text.strip().splitlines()[-1])
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

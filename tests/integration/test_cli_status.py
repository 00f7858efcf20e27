"""``antenna-jobs status``: the running job on one screen, with its queue, the workers seen and
the inbox; ``--json`` gives the same overview as data."""

from __future__ import annotations

import json
import re

import pytest

from core.states import JobState
from tests.helpers import eventually
from tests.helpers.jobs import entry, make_job, success_result
from tests.helpers.processes import invoke

pytestmark = pytest.mark.usefixtures("cli_env")


async def test_status_shows_the_running_job(api, pool, streams, cli_env):
    made = await make_job(pool, images=6, status=JobState.STARTED)
    job, slug = made.job, made.seeded.pipeline_slug
    await streams.publish(job.id, made.images)
    async with pool.connection() as conn:
        await conn.execute("UPDATE job_runs SET total = 6 WHERE job_id = %s", (job.id,))
    tasks = (await api.client.post(f"/jobs/{job.id}/tasks/", json={"batch_size": 2})).json()
    posted = await api.client.post(
        f"/jobs/{job.id}/result/",
        json={"results": [entry(t, success_result(t)) for t in tasks["tasks"][:1]]},
    )
    assert posted.status_code == 200 and posted.json()["results_queued"] == 1, posted.text

    async def acked() -> bool:  # JetStream applies an ack shortly after it arrives
        return (await streams.consumer(job.id)).num_ack_pending == 1

    await eventually(acked)

    wide = {**cli_env, "COLUMNS": "250"}
    result = await invoke(wide, "status")
    assert result.exit_code == 0, result.output
    out = result.stdout
    assert "Running jobs" in out and "Workers seen" in out
    row = next(line for line in out.splitlines() if re.search(rf"\b{job.id}\b", line))
    # job, name, project, pipeline, status, done/total, failed, images/s, ETA, then the queue:
    # 4 queued, 1 in flight (one answered and acked), 0 redelivered, 1 result in the inbox.
    cells = [c.strip() for c in re.split(r"[│┃|]", row) if c.strip()]
    assert cells[0] == str(job.id)
    assert job.name in cells[1]
    assert cells[2:6] == [str(job.project_id), slug, "STARTED", "0/6 (0%)"]
    assert cells[9:13] == ["4", "1", "0", "1"], out
    workers = out.split("Workers seen", 1)[1]
    poll = next(line for line in workers.splitlines() if slug in line)
    cells = [c.strip() for c in re.split(r"[│┃|]", poll) if c.strip()]
    assert cells[0] == slug and cells[-1] == "1"  # one running job of the pipeline
    assert re.search(r"result inbox: \d+ rows, oldest", out)

    as_json = await invoke(cli_env, "status", "--json")
    assert as_json.exit_code == 0, as_json.output
    data = json.loads(as_json.stdout)
    listed = {j["id"]: j for j in data["running"]}
    assert listed[job.id]["queue"] == {"queued": 4, "in_flight": 1, "redelivered": 0}
    assert listed[job.id]["inbox"] == 1

import asyncio, pytest
from tests.test_internal_jobs import *
from tests.test_internal_jobs import _hold_after_first_page

async def test_dbg(pool, temporal_client, settings, tmp_path):
    settings = with_export(settings, tmp_path, batch_size=10)
    job, _ = await export_job(pool, temporal_client, settings, 50, params={"format": "csv"})
    hold = _hold_after_first_page(settings, job.id)
    async with running_workers(temporal_client, settings), hold:
        await JobActions(pool, temporal_client, settings).run(job.id)
        await hold.wait_blocked()
        print("blocked", await hold.waiting_pids())
        await handle(temporal_client, job.id).cancel()
        for i in range(20):
            await asyncio.sleep(1)
            rows = await fetch(pool, "SELECT pid, state, wait_event_type, left(query, 80) q FROM pg_stat_activity WHERE datname='test' AND state <> 'idle'")
            print(i, rows)
            desc = await handle(temporal_client, job.id).describe()
            print([ (a.activity_type.name, a.state, a.attempt) for a in desc.raw_description.pending_activities])
        await handle(temporal_client, job.id).terminate()

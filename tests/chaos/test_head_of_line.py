"""A job whose collect or aggregation is slow never delays another job: with 20 jobs in their
aggregation phase and one held in a slow collect, a new job's first task message reaches NATS
within about a second of its start (benchmarks/head_of_line.py prints the figures)."""

from __future__ import annotations

import nats
import pytest

from benchmarks.head_of_line import measure
from tests.helpers.chaos import pick
from tests.helpers.temporal import running_workers

pytestmark = pytest.mark.slow
BOUND_SECONDS = 5.0  # generous: the benchmark measures well under one second here


async def test_a_new_job_is_not_held_up_by_busy_ones(pool, temporal_client, settings):
    nc = await nats.connect(settings.nats.url)
    try:
        async with running_workers(temporal_client, settings):
            result = await measure(temporal_client, settings, pool, nc, busy=20, rounds=pick(2, 5))
    finally:
        await nc.drain()
    print(result.line())
    assert max(result.busy) < BOUND_SECONDS, result.line()
    assert max(result.idle) < BOUND_SECONDS, result.line()

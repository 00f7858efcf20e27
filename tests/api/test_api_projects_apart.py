"""Issue 17 rows 1 and 6 at the API (in-process app, real PostgreSQL and NATS): the claim
listing offers a token only the jobs it may run; fair share counts a waiting job as a rival only
when a worker that may run it polled; the per-slug memories of the listing stay bounded whatever
slugs it is polled with."""

from __future__ import annotations

import uuid
from typing import Any

from antenna_db import users
from antenna_db.seed import SeedResult, seed
from antenna_db.users import Role
from core.fair_share import JobLoad
from core.states import JobState
from tests.helpers.api import Api, http_client
from tests.helpers.jobs import make_job

CLAIM = {"ids_only": "1", "incomplete_only": "1", "dispatch_mode": "async_api"}


async def _claim(client: Any, slug: str) -> tuple[int, set[int]]:
    """The count and the job ids (all pages) the ADC's claim poll offers."""
    answer = await client.get("/jobs", params={**CLAIM, "pipeline__slug__in": slug, "limit": 50})
    assert answer.status_code == 200, answer.text
    body = answer.json()
    return body["count"], {r["id"] for r in body["results"]}


Worker = tuple[SeedResult, str]


async def two_projects(pool, images: int) -> tuple[str, Worker, Worker]:
    """Two projects of ``images`` each whose pipelines share one new slug, each with a worker's
    token that may run its jobs: the slug, then (project, token) of A and of B."""
    slug = f"shared-{uuid.uuid4().hex[:8]}"
    made = []
    async with pool.connection() as conn:
        for name in ("A", "B"):
            seeded = await seed(conn, images, pipeline_slug=slug)
            key = await users.create_token_user(
                conn, f"{name}'s worker", project_id=seeded.project_id, role=Role.ML_DATA_MANAGER
            )
            made.append((seeded, key))
    return slug, made[0], made[1]


async def test_the_claim_listing_offers_only_jobs_the_token_may_run(api: Api, pool):
    slug, (seeded_a, key_a), (seeded_b, key_b) = await two_projects(pool, 4)
    async with pool.connection() as conn:
        # A member of B who may see its jobs but not run them (BasicMember: no run_ml_job).
        key_viewer = await users.create_token_user(
            conn, "B's viewer", project_id=seeded_b.project_id, role=Role.BASIC_MEMBER
        )
    job_b = await make_job(pool, seeded=seeded_b, status=JobState.STARTED)
    job_a = await make_job(pool, seeded=seeded_a, status=JobState.STARTED)

    assert await _claim(api.client, slug) == (2, {job_a.id, job_b.id})  # a superuser: both
    for key, expected in ((key_a, {job_a.id}), (key_b, {job_b.id}), (key_viewer, set())):
        async with http_client(api.app, key) as client:
            for _ in range(5):  # every draw, not one lucky one
                assert await _claim(client, slug) == (len(expected), expected)
            # Both projects are public: the UI's job list (no ids_only) still shows both.
            everything = await client.get("/jobs", params={"pipeline__slug__in": slug})
            assert {r["id"] for r in everything.json()["results"]} == {job_a.id, job_b.id}


async def test_a_job_nobody_polling_may_run_is_no_rival(api: Api, pool):
    slug, (seeded_a, key_a), (seeded_b, key_b) = await two_projects(pool, 1)
    fair = api.app.state.context.fair_share
    a_waits = JobLoad(1, seeded_a.project_id, slug, in_flight=0, waiting=100)
    b_waits = JobLoad(2, seeded_b.project_id, slug, in_flight=0, waiting=100)
    assert not fair._servable(a_waits) and not fair._servable(b_waits)

    async with http_client(api.app, key_a) as client:
        await _claim(client, slug)
    # A's worker polled the pipeline: A's job has a worker, B's has none that may run it.
    assert fair._servable(a_waits) and not fair._servable(b_waits)
    async with http_client(api.app, key_b) as client:
        await _claim(client, slug)
    assert fair._servable(b_waits)

    fair.polled.clear()
    await _claim(api.client, slug)  # a superuser's worker may serve every project
    assert fair._servable(a_waits) and fair._servable(b_waits)


async def test_many_distinct_slugs_do_not_grow_the_api_without_bound(api: Api, pool):
    job = await make_job(pool, images=1, status=JobState.STARTED)
    ctx = api.app.state.context
    ctx.fair_share.polled.max_size = 50
    ctx.liveness.throttle._last.max_size = 20
    for round_ in range(30):
        slugs = [f"no-such-{round_}-{i}-{uuid.uuid4().hex}" for i in range(100)]
        listed = await api.client.get(
            "/jobs",
            params={**CLAIM, "pipeline__slug__in": ",".join([job.seeded.pipeline_slug, *slugs])},
        )
        assert listed.status_code == 200
    # 3,000 distinct slugs: only the pipeline that exists is remembered as polled for; the
    # throttle of the services' heartbeats keeps a digest per distinct list, at most its cap.
    assert [key for key, _ in ctx.fair_share.polled.items()] == [(job.seeded.pipeline_slug, 0)]
    assert len(ctx.liveness.throttle) == 20
    for i in range(200):
        ctx.fair_share.listed([f"slug-{i}"], 1, frozenset({1}))
    assert len(ctx.fair_share.polled) == 50

"""``seed``, ``token create`` and ``job ...`` through the CLI, against the real services.

The CLI reads its settings from the environment, so the fixtures' schema, Temporal address and
task queue are passed as env vars. Commands run in a thread: each calls ``asyncio.run`` itself.
"""

from __future__ import annotations

import json
import uuid
from typing import Any

from antenna_db import job_store
from core import naming
from core.states import JobState
from tests.helpers.db import NAMES
from tests.helpers.processes import invoke


async def ok_json(env: dict[str, str], *args: str) -> Any:
    result = await invoke(env, *args)
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout)


async def seeded_job(env: dict[str, str], *extra: str) -> dict[str, Any]:
    seeded = await ok_json(env, "seed", "--images", "12")
    assert {"project_id", "pipeline_slug", "collection_id"} <= set(seeded)
    return await ok_json(
        env,
        "job",
        "create",
        "--project",
        str(seeded["project_id"]),
        "--pipeline",
        seeded["pipeline_slug"],
        "--collection",
        str(seeded["collection_id"]),
        *extra,
    )


async def test_create_status_and_cancel_a_job_that_never_started(cli_env, pool):
    created = await seeded_job(cli_env, "--limit", "5", "--no-shuffle")
    assert created["status"] == "CREATED"
    job_id = created["id"]
    async with pool.connection() as conn:
        job = await job_store.get_job(conn, job_id)
    assert job.limit == 5 and job.shuffle is False and job.dispatch_mode == "async_api"

    status = await ok_json(cli_env, "job", "status", str(job_id), "--json")
    assert status["id"] == job_id and status["status"] == "CREATED"
    assert [s["key"] for s in status["progress"]["stages"]] == ["collect", "process", "results"]

    human = await invoke(cli_env, "job", "status", str(job_id))
    assert human.exit_code == 0 and f"job {job_id} CREATED" in human.stdout
    assert "Collect" in human.stdout and "Results" in human.stdout

    # No workflow was ever started: the cancel revokes it directly.
    assert (await ok_json(cli_env, "job", "cancel", str(job_id)))["status"] == "REVOKED"
    refused = await invoke(cli_env, "job", "cancel", str(job_id))
    assert refused.exit_code == 1
    assert f"job {job_id} is REVOKED: cannot cancel" in refused.stderr
    logs = (await ok_json(cli_env, "job", "status", str(job_id), "--json"))["logs"]
    assert any("Cancel requested" in line["message"] for line in logs)

    watched = await invoke(cli_env, "job", "watch", str(job_id))
    assert watched.exit_code == 1 and f"job {job_id} REVOKED" in watched.stdout


async def test_run_and_retry_start_the_job_workflow(cli_env, pool, temporal_client):
    created = await seeded_job(cli_env)
    job_id = created["id"]
    assert (await ok_json(cli_env, "job", "run", str(job_id)))["status"] == "PENDING"
    handle = temporal_client.get_workflow_handle(NAMES.workflow_id(job_id))
    description = await handle.describe()
    assert description.workflow_type == naming.JOB_WORKFLOW
    assert description.task_queue == cli_env["ANTENNA_JOBS_TASK_QUEUE"]

    refused = await invoke(cli_env, "job", "retry", str(job_id))
    assert refused.exit_code == 1 and f"job {job_id} is PENDING: cannot retry" in refused.stderr

    # No worker serves this queue, so end the run by hand and retry the FAILURE.
    await handle.terminate(reason="test")
    async with pool.connection() as conn:
        assert await job_store.transition(conn, job_id, JobState.FAILURE, [JobState.PENDING])
    # Antenna's retry: RETRY and at once its enqueue's PENDING.
    assert (await ok_json(cli_env, "job", "retry", str(job_id)))["status"] == "PENDING"
    retried = await handle.describe()
    assert retried.run_id != description.run_id
    await temporal_client.get_workflow_handle(NAMES.workflow_id(job_id)).terminate("test done")


async def test_create_with_start_and_bad_input(cli_env, temporal_client):
    started = await seeded_job(cli_env, "--start")
    assert started["status"] == "PENDING"
    await temporal_client.get_workflow_handle(NAMES.workflow_id(started["id"])).terminate("done")
    missing = await invoke(cli_env, "job", "status", "1")
    assert missing.exit_code == 1 and "job 1 does not exist" in missing.stderr
    bad = await invoke(
        cli_env,
        "job",
        "create",
        "--project",
        "1",
        "--pipeline",
        "no-such-slug",
        "--collection",
        "1",
    )
    assert bad.exit_code == 1 and "pipeline" in bad.stderr


async def test_token_create_list_revoke(cli_env, pool):
    """An Antenna token (authtoken_token) of a new superuser; its name and expiry in ours."""
    result = await invoke(
        cli_env, "token", "create", "--name", "cli-test", "--superuser", "--expires", "30d"
    )
    assert result.exit_code == 0, result.output
    key = result.stdout.strip()
    assert len(key) == 40
    async with pool.connection() as conn:
        cur = await conn.execute(
            "SELECT u.is_superuser, u.is_active, m.name, m.expires_at > now() + interval '29 days'"
            " AS later FROM authtoken_token t JOIN users_user u ON u.id = t.user_id"
            " JOIN token_meta m ON m.user_id = u.id WHERE t.key = %s",
            (key,),
        )
        assert await cur.fetchone() == {
            "is_superuser": True,
            "is_active": True,
            "name": "cli-test",
            "later": True,
        }
    listed = await invoke(cli_env, "token", "list", "--json")
    assert listed.exit_code == 0, listed.output
    rows = [json.loads(line) for line in listed.stdout.splitlines()]
    assert any(r["fingerprint"] == key[:8] and r["name"] == "cli-test" for r in rows)
    assert key not in listed.stdout
    refused = await invoke(cli_env, "token", "create", "--name", "nobody")
    assert refused.exit_code == 1 and "--project" in refused.stderr
    revoked = await invoke(cli_env, "token", "revoke", key[:8])
    assert revoked.exit_code == 0, revoked.output
    async with pool.connection() as conn:
        cur = await conn.execute("SELECT 1 FROM authtoken_token WHERE key = %s", (key,))
        assert await cur.fetchone() is None


async def _token_keys(pool) -> set[str]:
    async with pool.connection() as conn:
        cur = await conn.execute("SELECT key FROM authtoken_token")
        return {r["key"] for r in await cur.fetchall()}


async def new_user(conn, tag: str, name: str) -> int:
    """A plain active user (no password) with a new address starting ``tag``; its id."""
    cur = await conn.execute(
        "INSERT INTO users_user (password, is_superuser, email, is_staff, is_active,"
        " date_joined, name) VALUES ('!', false, %s, false, true, now(), %s) RETURNING id",
        (f"{tag}-{uuid.uuid4().hex[:8]}@example.org", name),
    )
    return (await cur.fetchone())["id"]


async def test_token_revoke_matches_the_key_exactly(cli_env, pool):
    """Issue 17 row 4: LIKE wildcards in the argument match only themselves, and a prefix that
    several keys share revokes nothing; each command removes one token at most."""
    async with pool.connection() as conn:
        twin_user = await new_user(conn, "twins", "twins")
        twin_user_2 = await new_user(conn, "twin2", "twin 2")
        prefix = uuid.uuid4().hex[:10]
        twins = [prefix + "a" * 30, prefix + "b" * 30]
        for key, owner in zip(twins, (twin_user, twin_user_2), strict=True):
            await conn.execute(
                "INSERT INTO authtoken_token (key, created, user_id) VALUES (%s, now(), %s)",
                (key, owner),
            )
    before = await _token_keys(pool)
    assert len(before) >= 2

    for pattern in ("________", "%%%%%%%%", "_" * 40, prefix[:2] + "%" * 6):
        refused = await invoke(cli_env, "token", "revoke", pattern)
        assert refused.exit_code == 1, refused.output
        assert await _token_keys(pool) == before

    ambiguous = await invoke(cli_env, "token", "revoke", prefix)
    assert ambiguous.exit_code == 1 and "2 tokens start with" in ambiguous.stderr
    assert await _token_keys(pool) == before

    revoked = await invoke(cli_env, "token", "revoke", twins[0][:12])
    assert revoked.exit_code == 0, revoked.output
    assert await _token_keys(pool) == before - {twins[0]}

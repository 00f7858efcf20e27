"""Shared fixtures: real Postgres (a schema per session), Redis, NATS and a Temporal dev server.

Isolation is by unique names, never by wiping shared state: the session's schema is its own, job
ids start at a random offset so streams, subjects and Redis keys of this session cannot collide
with another's, and each test gets its own task queues.
"""

from __future__ import annotations

import random
import uuid
from collections.abc import AsyncIterator
from typing import Any

import nats
import psycopg
import pytest
import pytest_asyncio
import redis.asyncio as aioredis
from nats.aio.client import Client as NatsClient
from psycopg_pool import AsyncConnectionPool
from temporalio.client import Client
from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.testing import WorkflowEnvironment

from antenna_db.schema import ANTENNA
from core import search_attributes
from core.settings import DatabaseSettings, JobSettings, Settings
from storage.migrate import migrate
from storage.pool import open_pool
from tests.helpers.db import create_views
from tests.helpers.temporal import TEMPORAL_CLI, running_workers

# Fixture modules: their fixtures are available to every test module without imports.
pytest_plugins = [
    "tests.helpers.antenna",
    "tests.helpers.api",
    "tests.helpers.broker",
    "tests.helpers.mocked_job",
    "tests.helpers.mocked_workflows",
    "tests.helpers.workflow_faults",
    "tests.helpers.histories",
    # Marks the tests that need no service (no_services, fast): see the module.
    "tests.helpers.fast",
]


@pytest.fixture(scope="session")
def session_settings() -> Settings:
    """Antenna's tables (standalone, made by db migrate) and ours in two schemas of this
    session's own."""
    schema = f"aj_test_{uuid.uuid4().hex[:10]}"
    return Settings(database=DatabaseSettings(schema_name=schema, jobs_schema=f"{schema}_jobs"))


@pytest_asyncio.fixture(scope="session")
async def pool(session_settings: Settings) -> AsyncIterator[AsyncConnectionPool[Any]]:
    db = session_settings.database
    await migrate(db, ANTENNA)
    async with await psycopg.AsyncConnection.connect(db.url, autocommit=True) as conn:
        # Job ids name streams and Redis keys that are shared across sessions: start far apart.
        offset = random.randint(10**8, 10**12)
        await conn.execute(
            f"SELECT setval(pg_get_serial_sequence('{db.schema_name}.jobs_job', 'id'), {offset})"
        )
        await create_views(conn, f"{db.jobs_schema},{db.schema_name}")
    pool = await open_pool(db)
    try:
        yield pool
    finally:
        await pool.close()
        async with await psycopg.AsyncConnection.connect(db.url, autocommit=True) as conn:
            for schema in (db.jobs_schema, db.schema_name):
                await conn.execute(f"DROP SCHEMA IF EXISTS {schema} CASCADE")


@pytest_asyncio.fixture(scope="session")
async def temporal_env() -> AsyncIterator[WorkflowEnvironment]:
    async with await WorkflowEnvironment.start_local(
        dev_server_existing_path=str(TEMPORAL_CLI),
        search_attributes=list(search_attributes.ALL),
        data_converter=pydantic_data_converter,
        dev_server_log_level="error",
    ) as env:
        yield env


@pytest.fixture
def temporal_client(temporal_env: WorkflowEnvironment) -> Client:
    return temporal_env.client


@pytest.fixture
def settings(session_settings: Settings, temporal_env: WorkflowEnvironment) -> Settings:
    """Session settings with task queues of this test's own and short timings for tests."""
    queue = f"aj-test-{uuid.uuid4().hex[:10]}"
    config = temporal_env.client.service_client.config
    return session_settings.model_copy(
        update={
            "jobs": JobSettings(task_queue=queue, heartbeat_timeout=5, heartbeat_interval=0.5),
            "temporal": session_settings.temporal.model_copy(
                update={"address": config.target_host}
            ),
        }
    )


@pytest_asyncio.fixture
async def redis_client(session_settings: Settings) -> AsyncIterator[aioredis.Redis]:
    client = aioredis.Redis.from_url(session_settings.redis.url, decode_responses=True)
    try:
        yield client
    finally:
        await client.aclose()


@pytest_asyncio.fixture
async def nats_client(session_settings: Settings) -> AsyncIterator[NatsClient]:
    nc = await nats.connect(session_settings.nats.url)
    try:
        yield nc
    finally:
        await nc.drain()


# --- worker fixtures ---


@pytest_asyncio.fixture
async def job_workers(temporal_client: Client, settings: Settings) -> AsyncIterator[Any]:
    """The job workflow's workers (both task queues) for this test's settings; yields the
    worker's Resources (pool, redis, nats, jetstream)."""
    async with running_workers(temporal_client, settings) as resources:
        yield resources


@pytest.fixture
def cli_env(settings: Settings, pool: Any) -> dict[str, str]:
    """The environment of a CLI command on this test's settings (``pool``: the session schema
    is migrated and job ids offset away from other sessions')."""
    from tests.helpers.processes import cli_env as cli_env_for

    return cli_env_for(settings)

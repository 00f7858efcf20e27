"""What the commands share: settings, a database pool, job actions, and plain error messages.

Every command builds its own clients from ``Settings()`` (the environment) and closes them before
it returns, so a clean run exits 0.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Coroutine, Iterator
from contextlib import asynccontextmanager, contextmanager
from typing import TYPE_CHECKING, Any, NoReturn, TypeVar

import psycopg
import typer
from psycopg_pool import PoolTimeout
from rich.console import Console

from antenna_db.schema_check import SchemaIncompatible
from core import tracing
from core.errors import BrokerNotConfigured, InvalidJobInput, InvalidJobState, JobNotFound
from core.settings import Settings
from core.temporal_client import connect_temporal
from storage.pool import Pool, open_pool

if TYPE_CHECKING:
    from job_control.actions import JobActions

T = TypeVar("T")

console = Console(soft_wrap=True)
err_console = Console(stderr=True, soft_wrap=True)


def load_settings() -> Settings:
    return Settings()


def run(coro: Coroutine[Any, Any, T]) -> T:
    """Run one command's coroutine, turning known failures into a message and exit code 1."""
    with user_errors():
        return asyncio.run(coro)


def fail(message: str, code: int = 1) -> NoReturn:
    err_console.print(message, style="red", markup=False, highlight=False)
    raise typer.Exit(code)


@contextmanager
def user_errors() -> Iterator[None]:
    try:
        yield
    except InvalidJobState as err:
        fail(f"job {err.job_id} is {err.status}: cannot {err.action}")
    except (JobNotFound, InvalidJobInput, BrokerNotConfigured) as err:
        fail(str(err))
    except SchemaIncompatible as err:
        fail(str(err))
    except (psycopg.OperationalError, PoolTimeout) as err:
        fail(f"cannot reach PostgreSQL ({err}); is it running? try `antenna-jobs up`")


@asynccontextmanager
async def database(settings: Settings) -> AsyncIterator[Pool]:
    pool = await open_pool(settings.database)
    try:
        yield pool
    finally:
        await pool.close()


@asynccontextmanager
async def job_actions(settings: Settings) -> AsyncIterator[JobActions]:
    from job_control.actions import JobActions

    tracing.configure(settings.tracing, "antenna-jobs-cli")
    try:
        client = await connect_temporal(settings.temporal)
    except RuntimeError as err:
        tracing.shutdown()
        fail(
            f"cannot reach Temporal at {settings.temporal.address} ({err});"
            " is it running? try `antenna-jobs up`"
        )
    try:
        async with database(settings) as pool:
            yield JobActions(pool, client, settings)
    finally:
        tracing.shutdown()

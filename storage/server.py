"""The PostgreSQL server itself, apart from any table: is it answering, what time is it there,
and which database a URL reaches."""

from __future__ import annotations

from datetime import datetime
from typing import Any

import psycopg
from psycopg import AsyncConnection
from psycopg.conninfo import conninfo_to_dict


async def ping(url: str, connect_timeout: int) -> None:
    """Connect and run a query (``antenna-jobs health``); raises if either fails."""
    conn = await psycopg.AsyncConnection.connect(url, connect_timeout=connect_timeout)
    async with conn:
        await conn.execute("SELECT 1")


async def now(conn: AsyncConnection[Any]) -> datetime:
    """The database's clock (the transaction's start, in a transaction)."""
    cur = await conn.execute("SELECT now() AS now")
    row = await cur.fetchone()
    assert row is not None
    now: datetime = row["now"]
    return now


async def database_identity(url: str) -> str:
    """Which database ``url`` reaches, as the server tells it: its cluster's system identifier
    and the database's name (a role that may not read pg_control_system gets the URL's host and
    port instead)."""
    async with await psycopg.AsyncConnection.connect(url, autocommit=True) as conn:
        cur = await conn.execute("SELECT current_database()")
        row = await cur.fetchone()
        name = str(row[0]) if row else ""
        try:
            cur = await conn.execute("SELECT system_identifier::text FROM pg_control_system()")
            row = await cur.fetchone()
            cluster = str(row[0]) if row else ""
        except (
            psycopg.errors.InsufficientPrivilege,
            psycopg.errors.UndefinedFunction,
            psycopg.errors.FeatureNotSupported,
        ):
            # Some managed PostgreSQL services keep it from ordinary roles.
            parts = conninfo_to_dict(url)
            cluster = f"{parts.get('host', '')}:{parts.get('port', '5432')}"
    return f"{cluster}/{name}"

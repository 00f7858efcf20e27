"""Antenna's tokens at the API: a revoked or expired token, an inactive user are refused."""

from __future__ import annotations

import asyncio
from datetime import timedelta

from antenna_db import users
from tests.helpers.api import Api, http_client


async def test_expired_and_revoked_tokens_are_refused(api: Api, pool):
    async with pool.connection() as conn:
        short = await users.create_token_user(
            conn, "short-lived", superuser=True, expires_in=timedelta(seconds=1)
        )
        other = await users.create_token_user(conn, "revoked", superuser=True)
    async with http_client(api.app, short) as client:
        assert (await client.get("/jobs")).status_code == 200
        await asyncio.sleep(1.2)
        refused = await client.get("/jobs")
        assert refused.status_code == 401 and refused.json()["detail"] == "Token expired."
    async with pool.connection() as conn:
        assert await users.revoke_token(conn, other[:8]) == 1
        # Reconcile's sweep deletes expired tokens from Antenna's table too.
        assert await users.remove_expired_tokens(conn) == 1
        cur = await conn.execute("SELECT 1 FROM authtoken_token WHERE key = %s", (short,))
        assert await cur.fetchone() is None
    # A fresh API process (no cached callers) refuses the revoked key.
    api.app.state.context.tokens._cache.clear()
    async with http_client(api.app, other) as client:
        assert (await client.get("/jobs")).status_code == 401

"""Which failed starts may succeed later (a service unreachable) and which never will.

A start that failed because Temporal, PostgreSQL or the network did not answer is retried for as
long as it takes (with capped backoff): dead-lettering every Run of a ten-minute Temporal outage
would only make work for the operator. Anything else (a row the bridge cannot read, a job type
it does not know, a validation error, a bug) is retried a bounded number of times, then
dead-lettered.
"""

from __future__ import annotations

import psycopg
from psycopg_pool import PoolTimeout
from temporalio.service import RPCError, RPCStatusCode

_TRANSIENT_RPC = frozenset(
    {
        RPCStatusCode.UNAVAILABLE,
        RPCStatusCode.DEADLINE_EXCEEDED,
        RPCStatusCode.RESOURCE_EXHAUSTED,
        RPCStatusCode.ABORTED,
        RPCStatusCode.CANCELLED,
    }
)


def is_transient(error: BaseException) -> bool:
    if isinstance(error, RPCError):
        return error.status in _TRANSIENT_RPC
    return isinstance(error, OSError | TimeoutError | psycopg.OperationalError | PoolTimeout)


def describe(error: BaseException, limit: int = 500) -> str:
    """``Type: message``, bounded (a pydantic error lists every field)."""
    text = f"{type(error).__name__}: {error}"
    return text if len(text) <= limit else text[:limit] + "..."

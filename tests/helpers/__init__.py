"""Test helpers, one module a subject, and ``eventually``, the one way a test waits.

- api: the app in-process, its authenticated client (fixture ``api``) and task streams
  (fixture ``streams``)
- antenna: a database made by Antenna's own migrations and the reference recipe
- broker: RabbitMQ as Antenna uses it (fixture ``queue``) and the bridge's consumer
- chaos: test profile, holds inside PostgreSQL, the exactly-once checks, recovery times
- db: reading what a job left in the tables, for assertions
- jobs: the one job factory (``make_job``) and the one synthetic-result builder
- processes: subprocesses and servers a test owns (and may kill or restart), a TCP proxy
- settings: ``with_settings``, a test's own timings on top of the ``settings`` fixture
- temporal: in-process workers, workflow handles and a simulated ADC worker

Fixtures are registered by tests/conftest.py (``pytest_plugins``): tests never import them.
"""

from __future__ import annotations

import asyncio
import inspect
import time
from collections.abc import Awaitable, Callable
from typing import TypeVar

T = TypeVar("T")


async def eventually(
    check: Callable[[], Awaitable[T] | T], *, within: float = 30.0, interval: float = 0.1
) -> T:
    """Poll ``check`` (a coroutine function, or a plain one) until it returns a truthy value,
    and return that value; fail after ``within`` seconds, naming the last value seen
    (sdk-python's ``assert_eventually``). An AssertionError raised by ``check`` fails at once."""
    deadline = time.monotonic() + within
    while True:
        last = check()
        if inspect.isawaitable(last):
            last = await last
        if last:
            return last  # type: ignore[return-value]
        if time.monotonic() > deadline:
            raise AssertionError(f"condition not met within {within} s (last value {last!r})")
        await asyncio.sleep(interval)

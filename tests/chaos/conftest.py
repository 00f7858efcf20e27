"""The chaos tests' shared fixture: a job under way on worker processes (tests/helpers/chaos)."""

from __future__ import annotations

from collections.abc import Callable
from contextlib import AbstractAsyncContextManager
from typing import Any

import pytest

from tests.helpers.chaos import UnderWay, job_under_way


@pytest.fixture
def under_way(
    pool: Any, temporal_client: Any, settings: Any, nats_client: Any, tmp_path: Any
) -> Callable[..., AbstractAsyncContextManager[UnderWay]]:
    """job_under_way with this test's pool, NATS client, log directory and (unless given:
    ``client``, ``settings``) Temporal client and settings."""

    def start(
        images: int, budget: int, *, client: Any = None, settings: Any = settings, **more: Any
    ) -> AbstractAsyncContextManager[UnderWay]:
        return job_under_way(
            pool,
            client or temporal_client,
            settings,
            nats_client,
            tmp_path,
            images=images,
            budget=budget,
            **more,
        )

    return start

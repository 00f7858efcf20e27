"""Connecting to Temporal the same way everywhere (pydantic payloads, configured namespace)."""

from __future__ import annotations

from temporalio.client import Client
from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.runtime import Runtime

from core.settings import TemporalSettings


async def connect_temporal(settings: TemporalSettings, runtime: Runtime | None = None) -> Client:
    return await Client.connect(
        settings.address,
        namespace=settings.namespace,
        data_converter=pydantic_data_converter,
        runtime=runtime,
    )

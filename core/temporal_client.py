"""Connecting to Temporal the same way everywhere (pydantic payloads, configured namespace)."""

from __future__ import annotations

from temporalio.client import Client
from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.runtime import PrometheusConfig, Runtime, TelemetryConfig

from core.settings import TemporalSettings

_runtime: Runtime | None = None


def metrics_runtime(bind: str | None) -> Runtime | None:
    """One Runtime per process serving the SDK's Prometheus metrics on ``bind``; None keeps the
    default runtime (no metrics endpoint)."""
    global _runtime
    if bind is None:
        return None
    if _runtime is None:
        _runtime = Runtime(
            telemetry=TelemetryConfig(
                metrics=PrometheusConfig(bind_address=bind),
                global_tags={"service": "antenna-jobs"},
            )
        )
    return _runtime


async def connect_temporal(settings: TemporalSettings, runtime: Runtime | None = None) -> Client:
    return await Client.connect(
        settings.address,
        namespace=settings.namespace,
        data_converter=pydantic_data_converter,
        runtime=runtime,
    )

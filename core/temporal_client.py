"""Connecting to Temporal the same way everywhere: pydantic payloads, and the same connection
options in every process (worker, API, bridge, CLI, reconcile).

The options follow the SDK's own environment configuration (``temporalio.envconfig``): a profile
of Temporal's TOML file and the ``TEMPORAL_*`` variables (TEMPORAL_ADDRESS, TEMPORAL_NAMESPACE,
TEMPORAL_API_KEY, TEMPORAL_TLS, TEMPORAL_TLS_CLIENT_CERT_PATH, ...), so a Temporal Cloud or mTLS
setup written for the ``temporal`` CLI works here as it is. Our ``ANTENNA_JOBS_TEMPORAL_*``
settings, where set explicitly, win; where neither says anything, our defaults (the local dev
server, no TLS) apply.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from temporalio.client import Client
from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.envconfig import ClientConfigProfile
from temporalio.runtime import PrometheusConfig, Runtime, TelemetryConfig
from temporalio.service import TLSConfig

from core import tracing
from core.settings import TemporalSettings

_runtime: Runtime | None = None


@dataclass(frozen=True)
class ConnectOptions:
    """What Client.connect is given (the API key and key material are not printed)."""

    target_host: str
    namespace: str
    tls: bool | TLSConfig = False
    api_key: str | None = field(default=None, repr=False)
    rpc_metadata: dict[str, str] = field(default_factory=dict)

    def describe(self) -> str:
        """One line for logs and ``status``: where, and how it is secured."""
        if isinstance(self.tls, TLSConfig):
            how = "mutual TLS" if self.tls.client_cert else "TLS"
        else:
            how = "TLS" if self.tls else "no TLS"
        if self.api_key:
            how += ", API key"
        return f"{self.target_host} namespace {self.namespace} ({how})"


def _read(path: Any) -> bytes | None:
    return path.read_bytes() if path is not None else None


def connect_options(
    settings: TemporalSettings, environ: dict[str, str] | None = None
) -> ConnectOptions:
    """The connection options: Temporal's profile and TEMPORAL_* variables (``environ``: these
    instead of the process's), overridden by what ``settings`` sets explicitly."""
    profile = ClientConfigProfile.load(profile=settings.profile, override_env_vars=environ)
    loaded: dict[str, Any] = dict(profile.to_client_connect_config())
    explicit = settings.model_fields_set

    def pick(name: str, key: str) -> Any:
        if name in explicit or key not in loaded:
            return getattr(settings, name)
        return loaded[key]

    tls: bool | TLSConfig = loaded.get("tls", False)
    files = (settings.tls_ca_path, settings.tls_cert_path, settings.tls_key_path)
    if any(f is not None for f in files) or settings.tls_server_name:
        base = tls if isinstance(tls, TLSConfig) else TLSConfig()
        tls = TLSConfig(
            server_root_ca_cert=_read(settings.tls_ca_path) or base.server_root_ca_cert,
            client_cert=_read(settings.tls_cert_path) or base.client_cert,
            client_private_key=_read(settings.tls_key_path) or base.client_private_key,
            domain=settings.tls_server_name or base.domain,
        )
    elif settings.tls is not None:
        tls = settings.tls
    api_key = (
        settings.api_key.get_secret_value() if settings.api_key is not None else None
    ) or loaded.get("api_key")
    if api_key and tls is False and settings.tls is None:
        tls = True  # an API key is only ever sent over TLS (Temporal Cloud)
    return ConnectOptions(
        target_host=pick("address", "target_host"),
        namespace=pick("namespace", "namespace"),
        tls=tls,
        api_key=api_key,
        rpc_metadata=dict(loaded.get("rpc_metadata") or {}),
    )


# The Temporal SDK's metric names, one convention for the dashboard and the alert rules alike
# (deploy/grafana, deploy/prometheus/rules.yml; README "Seeing into it"): the SDK's `temporal_`
# prefix, Prometheus' base units and suffixes (counters end in `_total`, durations are seconds
# and end in `_seconds`) and the global tag service="antenna-jobs". The `_total` suffix is also
# what our /metrics pass-through (job_control/metrics.py) writes for every counter it re-exposes,
# so the SDK's own endpoint and ours name every series alike; `_seconds` keeps these histograms
# apart from the SDK's default milliseconds, so a panel built for the other unit shows no data
# rather than figures 1000 times off.
SDK_METRICS_SERVICE = "antenna-jobs"


def sdk_metrics_options(bind: str) -> dict[str, Any]:
    """TelemetryConfig arguments of a process serving the SDK's metrics on ``bind``."""
    return {
        "metrics": PrometheusConfig(
            bind_address=bind,
            counters_total_suffix=True,
            durations_as_seconds=True,
            unit_suffix=True,
        ),
        "global_tags": {"service": SDK_METRICS_SERVICE},
    }


def metrics_runtime(bind: str | None) -> Runtime | None:
    """One Runtime per process serving the SDK's Prometheus metrics on ``bind``; None keeps the
    default runtime (no metrics endpoint)."""
    global _runtime
    if bind is None:
        return None
    if _runtime is None:
        _runtime = Runtime(telemetry=TelemetryConfig(**sdk_metrics_options(bind)))
    return _runtime


async def connect_temporal(settings: TemporalSettings, runtime: Runtime | None = None) -> Client:
    options = connect_options(settings)
    return await Client.connect(
        options.target_host,
        namespace=options.namespace,
        api_key=options.api_key,
        tls=options.tls,
        rpc_metadata=options.rpc_metadata,
        data_converter=pydantic_data_converter,
        runtime=runtime,
        # Traces, when this process configured them (core/tracing.py): its workers inherit it.
        interceptors=tracing.interceptors(),
    )

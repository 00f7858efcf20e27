"""Reaching a production Temporal: TLS, mutual TLS and an API key, through our settings or the
SDK's own environment configuration (issue 18). The dev server has no TLS: a TLS-terminating
proxy in front of it plays the secured frontend."""

from __future__ import annotations

from pathlib import Path

import pytest
from temporalio.service import RPCError, TLSConfig
from temporalio.testing import WorkflowEnvironment

from core.settings import TemporalSettings
from core.temporal_client import connect_options, connect_temporal
from tests.helpers.tls import Certificates, make_certificates, tls_proxy


@pytest.fixture(scope="module")
def certs(tmp_path_factory: pytest.TempPathFactory) -> Certificates:
    return make_certificates(tmp_path_factory.mktemp("certs"))


def _target(env: WorkflowEnvironment) -> str:
    return env.client.service_client.config.target_host


async def _reachable(settings: TemporalSettings) -> bool:
    client = await connect_temporal(settings)
    await client.count_workflows()
    return True


async def test_tls_with_our_settings(temporal_env: WorkflowEnvironment, certs: Certificates):
    async with tls_proxy(_target(temporal_env), certs, require_client_cert=False) as address:
        settings = TemporalSettings(
            address=address, tls_ca_path=certs.ca, tls_server_name="localhost"
        )
        assert "(TLS)" in connect_options(settings, environ={}).describe()
        assert await _reachable(settings)


async def test_mutual_tls_with_our_settings(temporal_env: WorkflowEnvironment, certs: Certificates):
    async with tls_proxy(_target(temporal_env), certs, require_client_cert=True) as address:
        settings = TemporalSettings(
            address=address,
            tls_ca_path=certs.ca,
            tls_cert_path=certs.client_cert,
            tls_key_path=certs.client_key,
            tls_server_name="localhost",
        )
        assert "(mutual TLS)" in connect_options(settings, environ={}).describe()
        assert await _reachable(settings)
        # The same server refuses a client without its certificate.
        without = TemporalSettings(
            address=address, tls_ca_path=certs.ca, tls_server_name="localhost"
        )
        with pytest.raises((RPCError, RuntimeError)):
            await _reachable(without)


async def test_mutual_tls_from_temporal_environment_variables(
    temporal_env: WorkflowEnvironment,
    certs: Certificates,
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
):
    """The variables the `temporal` CLI reads configure every process of ours too."""
    async with tls_proxy(_target(temporal_env), certs, require_client_cert=True) as address:
        monkeypatch.setenv("TEMPORAL_CONFIG_FILE", str(tmp_path / "absent.toml"))
        monkeypatch.setenv("TEMPORAL_ADDRESS", address)
        monkeypatch.setenv("TEMPORAL_TLS_SERVER_CA_CERT_PATH", str(certs.ca))
        monkeypatch.setenv("TEMPORAL_TLS_CLIENT_CERT_PATH", str(certs.client_cert))
        monkeypatch.setenv("TEMPORAL_TLS_CLIENT_KEY_PATH", str(certs.client_key))
        monkeypatch.setenv("TEMPORAL_TLS_SERVER_NAME", "localhost")
        settings = TemporalSettings()
        assert connect_options(settings).target_host == address
        assert await _reachable(settings)


def test_a_profile_file_and_our_explicit_settings(tmp_path: Path):
    config = tmp_path / "temporal.toml"
    config.write_text(
        '[profile.cloud]\naddress = "ns.acct.tmprl.cloud:7233"\nnamespace = "ns.acct"\n'
        'api_key = "secret-key"\n'
    )
    env = {"TEMPORAL_CONFIG_FILE": str(config)}
    cloud = connect_options(TemporalSettings(profile="cloud"), environ=env)
    assert (cloud.target_host, cloud.namespace) == ("ns.acct.tmprl.cloud:7233", "ns.acct")
    assert cloud.api_key == "secret-key" and cloud.tls is True  # an API key implies TLS
    assert "secret-key" not in repr(cloud) and "API key" in cloud.describe()
    # Ours, set explicitly, win over the profile's.
    mine = connect_options(TemporalSettings(profile="cloud", namespace="other"), environ=env)
    assert mine.namespace == "other" and mine.target_host == "ns.acct.tmprl.cloud:7233"


def test_defaults_reach_the_local_dev_server_without_tls(tmp_path: Path):
    env = {"TEMPORAL_CONFIG_FILE": str(tmp_path / "absent.toml")}
    local = connect_options(TemporalSettings(), environ=env)
    assert (local.target_host, local.namespace, local.tls, local.api_key) == (
        "127.0.0.1:7233",
        "default",
        False,
        None,
    )
    keyed = connect_options(TemporalSettings(api_key="k"), environ=env)
    assert keyed.tls is True and keyed.api_key == "k"
    files = connect_options(TemporalSettings(tls_server_name="temporal.internal"), environ=env)
    assert isinstance(files.tls, TLSConfig) and files.tls.domain == "temporal.internal"

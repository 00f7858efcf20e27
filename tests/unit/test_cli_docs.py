"""The README, docker-compose.yml and deploy scripts stay consistent with the code they describe."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path
from typing import Any

import typer.main
from pydantic_settings import BaseSettings

from cli.main import app
from cli.stack.local_stack import StackSettings
from core import search_attributes
from core.settings import Settings

ROOT = Path(__file__).resolve().parent.parent.parent
ENV_NAME = re.compile(r"\bANTENNA_JOBS_[A-Z0-9_]*[A-Z0-9]\b")
# Not settings: read by the Makefile and tests only.
NOT_SETTINGS = {"ANTENNA_JOBS_TEST_PROFILE"}


def setting_env_names() -> set[str]:
    classes: list[type[BaseSettings]] = [StackSettings]
    for field in Settings.model_fields.values():
        assert isinstance(field.annotation, type) and issubclass(field.annotation, BaseSettings)
        classes.append(field.annotation)
    names = set()
    for cls in classes:
        prefix = str(cls.model_config.get("env_prefix", ""))
        for name, field in cls.model_fields.items():
            alias = field.validation_alias
            names.add(alias if isinstance(alias, str) else f"{prefix}{name}".upper())
    return names


def command_paths(group: Any, prefix: str = "") -> list[str]:
    paths = []
    for name, command in group.commands.items():
        if hasattr(command, "commands"):  # a group (typer ships its own click classes)
            paths += command_paths(command, f"{prefix}{name} ")
        else:
            paths.append(f"{prefix}{name}")
    return paths


def test_readme_lists_every_setting_and_names_no_unknown_one():
    readme = (ROOT / "README.md").read_text()
    known = setting_env_names()
    assert sorted(known - set(ENV_NAME.findall(readme))) == []
    assert sorted(set(ENV_NAME.findall(readme)) - known - NOT_SETTINGS) == []


def test_readme_lists_every_command():
    readme = (ROOT / "README.md").read_text()
    paths = command_paths(typer.main.get_command(app))
    assert "job create" in paths and "up" in paths
    missing = [p for p in paths if f"| `{p}" not in readme]
    assert missing == []


def test_deploy_files_use_only_real_settings():
    known = setting_env_names()
    for name in ("docker-compose.yml", "docker-compose.antenna.yml", "Dockerfile"):
        used = set(ENV_NAME.findall((ROOT / name).read_text()))
        assert used, name
        assert sorted(used - known) == [], name


def test_compose_registers_our_search_attributes():
    script = (ROOT / "deploy" / "temporal" / "setup-namespace.sh").read_text()
    flags = search_attributes.dev_server_flags()
    assert set(re.findall(r"\b(Antenna\w+=\w+)\b", script)) == set(flags[1::2])


def _compose(name: str = "docker-compose.yml") -> dict[str, Any]:
    import yaml

    class Loader(yaml.SafeLoader):
        """Compose's merge tags (!reset, !override) read as their plain values."""

    def plain(loader: yaml.SafeLoader, node: yaml.Node) -> Any:
        if isinstance(node, yaml.MappingNode):
            return loader.construct_mapping(node)
        if isinstance(node, yaml.SequenceNode):
            return loader.construct_sequence(node)
        return loader.construct_scalar(node)  # type: ignore[arg-type]

    for tag in ("!reset", "!override"):
        Loader.add_constructor(tag, plain)
    loaded: dict[str, Any] = yaml.load((ROOT / name).read_text(), Loader=Loader)
    return loaded


def test_antenna_override_joins_antennas_services_and_starts_none_of_ours():
    """docker-compose.antenna.yml: our PostgreSQL, Redis and NATS are not started; every app
    service reads Antenna's database, cache and broker from the env file; the bridge runs."""
    override = _compose("docker-compose.antenna.yml")
    services = override["services"]
    for ours in ("app-postgres", "redis", "nats"):
        assert services[ours]["profiles"] == ["standalone"]
    for name in ("migrate", "api", "worker", "bridge"):
        env = services[name]["environment"]
        assert env["ANTENNA_JOBS_DATABASE_URL"].startswith("${ANTENNA_DATABASE_URL:?")
        assert env["ANTENNA_JOBS_ANTENNA_BROKER_URL"].startswith("${ANTENNA_BROKER_URL:?")
        assert "ANTENNA_JOBS_ANTENNA_CACHE_URL" in env
        assert "antenna" in services[name]["networks"]
    assert services["bridge"]["command"] == ["bridge"]
    assert override["networks"]["antenna"]["external"] is True
    raw = (ROOT / "docker-compose.antenna.yml").read_text()
    documented = set(re.findall(r"^([A-Z0-9_]+)=", (ROOT / ".env.example").read_text(), re.M))
    assert set(ANY_VAR.findall(raw)) - {"ANTENNA_DATABASE_SCHEMA", "ANTENNA_JOBS_REDIS_URL"} <= (
        documented
    )


def _published(service: dict[str, Any]) -> list[str]:
    return [str(p) for p in service.get("ports", [])]


def test_compose_publishes_only_the_api_on_all_interfaces():
    services = _compose()["services"]
    assert _published(services["api"]) == ["8000:8000"]
    for name, service in services.items():
        if name == "api":
            continue
        for port in _published(service):
            # "127.0.0.1:HOST:CONTAINER": reachable from this host only.
            assert port.startswith("127.0.0.1:") and port.count(":") == 2, (name, port)
    assert _published(services["temporal"]) == ["127.0.0.1:7233:7233"]
    assert _published(services["temporal-ui"]) == ["127.0.0.1:8080:8080"]


SECRET_KEYS = re.compile(r"PASSWORD|PWD|SECRET|TOKEN")
REQUIRED_VAR = re.compile(r"\$\{([A-Z0-9_]+):\?[^}]*\}")
ANY_VAR = re.compile(r"\$\{([A-Z0-9_]+)(?::?[-?][^}]*)?\}")


def _environments(compose: dict[str, Any]) -> list[tuple[str, dict[str, Any]]]:
    envs = [(name, s.get("environment") or {}) for name, s in compose["services"].items()]
    envs += [(k, v) for k, v in compose.items() if k.startswith("x-") and "env" in k]
    return envs


def test_compose_reads_every_password_from_the_env_file():
    compose = _compose()
    for where, env in _environments(compose):
        assert isinstance(env, dict), where
        for key, value in env.items():
            text = str(value)
            if SECRET_KEYS.search(key) and key.endswith("_FILE"):
                # The secret's path (a compose secret read from the env file), not the secret.
                assert text.startswith("/run/secrets/"), f"{where}.{key}"
            elif SECRET_KEYS.search(key):
                assert "${" in text, f"{where}.{key} is written in the file"
            if "://" in text and "@" in text:  # a URL with credentials
                user_info = text.split("://", 1)[1].split("@", 1)[0]
                assert ":" not in user_info or REQUIRED_VAR.search(user_info), (where, key)
    raw = (ROOT / "docker-compose.yml").read_text()
    required = set(REQUIRED_VAR.findall(raw))
    assert {"TEMPORAL_DB_PASSWORD", "APP_DB_PASSWORD"} <= required
    example = (ROOT / ".env.example").read_text()
    documented = set(re.findall(r"^([A-Z0-9_]+)=", example, re.MULTILINE))
    assert set(ANY_VAR.findall(raw)) <= documented
    ignored = (ROOT / ".gitignore").read_text().split()
    assert ".env" in ignored
    assert ".env" in (ROOT / ".dockerignore").read_text().split()


def test_the_image_copies_every_package():
    """A package the image leaves out is an ImportError only in production."""
    config = tomllib.loads((ROOT / "pyproject.toml").read_text())
    packages = [p.rstrip("*") for p in config["tool"]["setuptools"]["packages"]["find"]["include"]]
    dockerfile = (ROOT / "Dockerfile").read_text()
    for package in packages:
        assert f"COPY {package} {package}" in dockerfile, package
        assert (ROOT / package / "__init__.py").exists(), package

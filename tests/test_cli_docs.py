"""The README, docker-compose.yml and deploy scripts stay consistent with the code they describe."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import typer.main
from pydantic_settings import BaseSettings

from cli.local_stack import StackSettings
from cli.main import app
from core import search_attributes
from core.settings import Settings

ROOT = Path(__file__).resolve().parent.parent
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
    for name in ("docker-compose.yml", "Dockerfile"):
        used = set(ENV_NAME.findall((ROOT / name).read_text()))
        assert used, name
        assert sorted(used - known) == [], name


def test_compose_registers_our_search_attributes():
    script = (ROOT / "deploy" / "temporal" / "setup-namespace.sh").read_text()
    flags = search_attributes.dev_server_flags()
    assert set(re.findall(r"\b(Antenna\w+=\w+)\b", script)) == set(flags[1::2])

"""Issue 7: the fake worker's token comes from the environment, so `ps` does not show it."""

from __future__ import annotations

import json
import os

from typer.testing import CliRunner

from cli.main import app
from cli.stack import processes


def _env(**extra: str) -> dict[str, str]:
    # CliRunner overlays these on os.environ; None removes a variable.
    cleared = {k: None for k in os.environ if k.startswith("ANTENNA_JOBS_")}
    return {**cleared, **extra}


def test_token_from_the_environment_without_the_option():
    url = f"http://127.0.0.1:{processes.free_port()}"  # nothing listens: one idle pass
    result = CliRunner().invoke(
        app, ["fake-worker", "--once", "--api-url", url], env=_env(ANTENNA_JOBS_API_TOKEN="k")
    )
    assert result.exit_code == 0, result.output
    assert json.loads(result.output.strip().splitlines()[-1])["jobs"] == 0


def test_no_token_names_the_environment_variable():
    result = CliRunner().invoke(app, ["fake-worker", "--once"], env=_env())
    assert result.exit_code == 1
    assert "ANTENNA_JOBS_API_TOKEN" in result.output


def test_help_prefers_the_environment():
    result = CliRunner().invoke(app, ["fake-worker", "--help"], env={"COLUMNS": "200"})
    assert result.exit_code == 0
    text = " ".join(result.output.split())
    assert "ANTENNA_JOBS_API_TOKEN" in text and "ps" in text

"""Fixtures for the command-line tests (plain helpers and flow sources: ``helpers.py``).

- ``flow_file(name, source)`` writes a flow module into ``tmp_path``.
- ``cli(*args)`` runs the installed ``iterflow`` script in a subprocess (with
  this test's ``ITERFLOW_HOME``) and returns the completed process.
- ``invoke(*args)`` runs the click command in-process with ``CliRunner``: fast,
  for the paths that need no second process.
- ``env``: the environment those subprocesses get.
"""

from __future__ import annotations

import os
import subprocess
import textwrap
from pathlib import Path

import pytest
from click.testing import CliRunner

from iterflow.cli.main import cli as cli_group
from tests.cli.helpers import COMMAND


@pytest.fixture
def home(tmp_path: Path) -> Path:
    """This test's ITERFLOW_HOME (the suite's autouse fixture already set it)."""
    return Path(os.environ["ITERFLOW_HOME"])


@pytest.fixture
def env(home: Path) -> dict[str, str]:
    """The environment for a subprocess: this test's home, no colours, a fixed width."""
    environment = dict(os.environ)
    environment.update(ITERFLOW_HOME=str(home), NO_COLOR="1", COLUMNS="160", TERM="dumb")
    environment.pop("ITERFLOW_STORE_URL", None)
    environment.pop("ITERFLOW_DEBUG", None)
    return environment


@pytest.fixture
def flow_file(tmp_path: Path):
    """``flow_file("name.py", source)``: write a flow module; returns its path."""

    def write(name: str, source: str) -> Path:
        path = tmp_path / name
        path.write_text(textwrap.dedent(source))
        return path

    return write


@pytest.fixture
def cli(env: dict[str, str], tmp_path: Path):
    """``cli(*args, timeout=30)``: run the real ``iterflow`` script; a CompletedProcess."""

    def run(*args: str, timeout: float = 30, **kwargs) -> subprocess.CompletedProcess:
        return subprocess.run(
            [*COMMAND, *map(str, args)],
            env={**env, **kwargs.pop("extra_env", {})},
            cwd=tmp_path,
            capture_output=True,
            text=True,
            timeout=timeout,
            **kwargs,
        )

    return run


@pytest.fixture
def invoke(tmp_path: Path, monkeypatch):
    """``invoke(*args)``: the CLI in-process (click's CliRunner); stdout and stderr apart."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("NO_COLOR", "1")
    monkeypatch.delenv("ITERFLOW_DEBUG", raising=False)

    def run(*args: str):
        return CliRunner().invoke(cli_group, [str(a) for a in args], catch_exceptions=False)

    return run

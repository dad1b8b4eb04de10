"""Fixtures for the end-to-end durability tests: real ``flow.run()``, real stores, real processes.

- ``home``: this test's ``ITERFLOW_HOME``, made (also set in this process).
- ``store_url``: the store the test's runs record to — the default SQLite file
  ``$ITERFLOW_HOME/iterflow.db`` and, when ``ITERFLOW_TEST_POSTGRES_URL`` is
  set, a fresh PostgreSQL schema (dropped afterwards). Subprocesses reach the
  SQLite store through ``ITERFLOW_HOME`` alone (the default), the PostgreSQL
  one through ``ITERFLOW_STORE_URL``.
- ``flow_script``: writes a flow file into the test's directory and starts it
  in fresh processes; every process it started is killed at teardown.
"""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest

from tests.backends import BACKENDS, postgres_schema

from .helpers import FlowScript


@pytest.fixture
def home(tmp_path, monkeypatch):
    path = tmp_path / "home"
    path.mkdir()
    monkeypatch.setenv("ITERFLOW_HOME", str(path))
    monkeypatch.delenv("ITERFLOW_STORE_URL", raising=False)
    return path


@pytest.fixture(params=BACKENDS)
def store_url(request, home) -> Iterator[str]:
    if request.param == "sqlite":
        yield f"sqlite:///{home / 'iterflow.db'}"
        return
    with postgres_schema("d") as url:
        yield url


@pytest.fixture
def flow_script(tmp_path, home, request):
    """``flow_script(body, store_url=None)`` -> a :class:`FlowScript` in ``tmp_path``."""
    made: list[FlowScript] = []

    def make(body: str, store_url: str | None = None) -> FlowScript:
        env = dict(os.environ)
        env["ITERFLOW_HOME"] = str(home)
        env.pop("ITERFLOW_STORE_URL", None)
        if store_url is not None and not store_url.startswith("sqlite:"):
            env["ITERFLOW_STORE_URL"] = store_url
        script = FlowScript(tmp_path / f"flow{len(made)}", body, env)
        made.append(script)
        return script

    try:
        yield make
    finally:
        for script in made:
            script.kill_all()

"""A store this process cannot write: the reading commands work, ``run`` says why it cannot.

The tests run as root, which ignores file modes, so the commands under test
run as another user (``nobody``, through ``setpriv``) that keeps only the
capability to read and search every file (so it can reach the interpreter
and the test's directory) — exactly someone reading another user's store.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

import pytest

from tests.cli.helpers import ACCUMULATE, COMMAND, FOREVER, needs_store

SETPRIV = shutil.which("setpriv")
pytestmark = [
    needs_store,
    pytest.mark.skipif(
        SETPRIV is None or os.geteuid() != 0,
        reason="needs root and setpriv, to run the CLI as another user",
    ),
]


@pytest.fixture
def home():
    """An ITERFLOW_HOME that others may read, like a home directory: on a path anyone
    can traverse (SQLite checks the path with ``access()``, which ignores capabilities)."""
    path = Path(tempfile.mkdtemp(prefix="iterflow-ro-"))
    path.chmod(0o755)
    yield path
    shutil.rmtree(path, ignore_errors=True)


@pytest.fixture
def env(env, home):
    return {**env, "ITERFLOW_HOME": str(home)}


@pytest.fixture
def cli(cli, home):
    def run(*args, **kwargs):
        return cli(*args, extra_env={"ITERFLOW_HOME": str(home)}, **kwargs)

    return run


@pytest.fixture
def as_nobody(env, tmp_path):
    """``as_nobody(*args)``: the CLI as user nobody, reading but not writing others' files."""

    def run(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run(
            [SETPRIV, "--reuid=65534", "--regid=65534", "--clear-groups",
             "--inh-caps=+dac_read_search", "--ambient-caps=+dac_read_search",
             *COMMAND, *map(str, args)],
            env={**env, "HOME": str(tmp_path)}, cwd=tmp_path, capture_output=True, text=True,
            timeout=60,
        )

    return run


def _files(home) -> set[str]:
    return {p.name for p in home.iterdir()}


def test_reading_commands_work_on_a_store_the_user_cannot_write(cli, as_nobody, flow_file,
                                                                home):
    path = flow_file("acc.py", ACCUMULATE)
    assert cli("run", path, "-p", "n=3").returncode == 0
    run_id = json.loads(cli("runs", "--json").stdout)[0]["run_id"]
    before = _files(home)
    assert "iterflow.db-shm" not in before  # the writer is gone: no -shm to share

    listed = as_nobody("runs", "--json")
    assert listed.returncode == 0, listed.stderr
    assert [r["run_id"] for r in json.loads(listed.stdout)] == [run_id]
    shown = as_nobody("show", run_id)
    assert shown.returncode == 0 and "accumulate" in shown.stdout, shown.stderr
    history = as_nobody("show", run_id, "--iterations", "accumulate", "--json")
    assert [r["loop_index"] for r in json.loads(history.stdout)] == [0, 1, 2, 3]
    logs = as_nobody("logs", run_id)
    assert logs.returncode == 0 and "partial sum 1" in logs.stdout, logs.stderr
    assert _files(home) == before  # nothing created beside the store

    refused = as_nobody("run", path)
    assert refused.returncode == 1
    assert (f"the store at {home / 'iterflow.db'} is read-only; set ITERFLOW_HOME or "
            f"ITERFLOW_STORE_URL") in refused.stderr
    assert "unable to open database file" not in refused.stderr
    assert "Running flow" not in refused.stdout  # refused before the run started
    assert len(json.loads(cli("runs", "--json").stdout)) == 1


def _recorded_iterations(cli, run_id: str) -> int:
    """How many iterations of ``spin`` the store holds for ``run_id`` (read by its owner)."""
    shown = cli("show", run_id, "--iterations", "spin", "--json")
    return len(json.loads(shown.stdout)) if shown.returncode == 0 else 0


def test_another_user_follows_a_live_run(cli, as_nobody, flow_file, env, tmp_path, home):
    path = flow_file("forever.py", FOREVER)
    proc = subprocess.Popen([*COMMAND, "run", str(path), "-q"], env=env, cwd=tmp_path,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        # Until the run has iterations recorded (a fixed pause after its first row was
        # too short on a loaded machine: the reader then found none).
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            runs = json.loads(cli("runs", "--json").stdout or "[]")
            if runs and _recorded_iterations(cli, runs[0]["run_id"]):
                break
            time.sleep(0.2)
        listed = as_nobody("runs", "--json")
        assert listed.returncode == 0, listed.stderr
        [run] = json.loads(listed.stdout)
        assert run["state"] == "Running"  # its process is alive, though not the reader's
        shown = as_nobody("show", run["run_id"], "--iterations", "spin", "--json")
        assert shown.returncode == 0, shown.stderr
        assert len(json.loads(shown.stdout)) > 0
    finally:
        proc.terminate()
        proc.wait(timeout=30)

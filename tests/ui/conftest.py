"""Fixtures for the dashboard: real SQLite stores written through the store's sink."""

from __future__ import annotations

import pytest

pytest.importorskip("starlette")
pytest.importorskip("jinja2")

from starlette.testclient import TestClient

from iterflow.store import open_store
from iterflow.ui import create_app
from tests.ui.stores import write_big_run, write_small_runs


@pytest.fixture(scope="module")
def big(tmp_path_factory):
    """A store with one big run (a 1,000-iteration loop, a 40-iteration block, a
    120-wide map) and 120 small runs; yields ``(store, BigRun)``."""
    home = tmp_path_factory.mktemp("ui-store")
    store = open_store(f"sqlite:///{home}/iterflow.db", home=home)
    write_small_runs(store, 120)
    run = write_big_run(store, loops=1000, block=40, width=120)
    yield store, run
    store.close()


@pytest.fixture(scope="module")
def client(big):
    store, _run = big
    with TestClient(create_app(store, interval=0.05)) as c:
        yield c


@pytest.fixture
def empty_store(tmp_path):
    store = open_store(f"sqlite:///{tmp_path}/iterflow.db", home=tmp_path)
    yield store
    store.close()

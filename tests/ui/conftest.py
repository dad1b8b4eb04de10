"""Fixtures for the dashboard: real stores (SQLite; PostgreSQL when available) written
through the store's sink."""

from __future__ import annotations

import contextlib

import pytest

pytest.importorskip("starlette")
pytest.importorskip("jinja2")

from starlette.testclient import TestClient

from iterflow.store import open_store
from iterflow.ui import create_app
from tests.backends import BACKENDS, postgres_schema
from tests.ui.stores import write_big_run, write_small_runs


@contextlib.contextmanager
def store_on(backend: str, home):
    """An open store on ``backend`` (SQLite in ``home``, or a fresh PostgreSQL schema)."""
    if backend == "sqlite":
        with open_store(f"sqlite:///{home}/iterflow.db", home=home) as store:
            yield store
    else:
        with postgres_schema("ui") as url, open_store(url, home=home) as store:
            yield store


@pytest.fixture(scope="module", params=BACKENDS)
def big(request, tmp_path_factory):
    """A store with one big run (a 1,000-iteration loop, a 40-iteration block, a
    120-wide map) and 120 small runs; yields ``(store, BigRun)``."""
    with store_on(request.param, tmp_path_factory.mktemp("ui-store")) as store:
        write_small_runs(store, 120)
        run = write_big_run(store, loops=1000, block=40, width=120)
        yield store, run


@pytest.fixture(scope="module")
def client(big):
    store, _run = big
    with TestClient(create_app(store, interval=0.05)) as c:
        yield c


@pytest.fixture(params=BACKENDS)
def empty_store(request, tmp_path):
    with store_on(request.param, tmp_path) as store:
        yield store

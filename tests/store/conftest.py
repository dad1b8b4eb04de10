"""Fixtures for the store tests: a fresh store per test, on SQLite and, when
``ITERFLOW_TEST_POSTGRES_URL`` is set, on PostgreSQL too.

Each PostgreSQL test gets its own schema (through ``search_path`` in the URL),
dropped afterwards, so tests never see each other's rows and the suite needs
only one database.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.backends import BACKENDS, postgres_schema


@pytest.fixture
def home(tmp_path, monkeypatch):
    """``ITERFLOW_HOME`` for this test (results files land under it)."""
    path = tmp_path / "home"
    monkeypatch.setenv("ITERFLOW_HOME", str(path))
    monkeypatch.delenv("ITERFLOW_STORE_URL", raising=False)
    return path


@pytest.fixture(params=BACKENDS)
def store_url(request, tmp_path, home) -> Iterator[str]:
    """A URL for an empty store: a SQLite file, or a fresh PostgreSQL schema."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'store.db'}"
        return
    with postgres_schema("t") as url:
        yield url


@pytest.fixture
def sqlite_url(tmp_path, home) -> str:
    """A SQLite store URL, for what only SQLite can show (files, locks, full disks)."""
    return f"sqlite:///{tmp_path / 'store.db'}"


@pytest.fixture
def store(store_url):
    """An open store at ``store_url``."""
    from iterflow.store import open_store

    st = open_store(store_url)
    yield st
    st.close()


@pytest.fixture
def sink(store):
    """A sink on ``store`` with the default batching, closed after the test."""
    s = store.sink()
    yield s
    try:
        s.close()
    except Exception:
        pass  # a test that broke the store on purpose has already checked the error


# These modules read the writer thread's own state (its recorder's keys, its
# connection) or stand in for its writes: they run with the writer thread,
# whatever ITERFLOW_WRITER says (test_writer_process covers the writer process).
_THREAD_WRITER_MODULES = frozenset({
    "test_writer", "test_writer_connections", "test_writer_property", "test_implied_start",
})


@pytest.fixture(autouse=True)
def _the_writer_thread_for_its_own_tests(request, monkeypatch):
    if request.module.__name__.rsplit(".", 1)[-1] in _THREAD_WRITER_MODULES:
        monkeypatch.setenv("ITERFLOW_WRITER", "thread")

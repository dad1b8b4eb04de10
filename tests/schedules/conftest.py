"""Fixtures for the schedule tests: a store per test, a clock the test moves."""

from __future__ import annotations

import contextlib
from datetime import UTC, datetime

import pytest

from tests.backends import BACKENDS, postgres_schema


class FakeClock:
    """A clock that stands still until the test moves it (``clock.now = ...``)."""

    def __init__(self, now: datetime) -> None:
        self.now = now

    def __call__(self) -> datetime:
        return self.now


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock(datetime(2026, 1, 1, 10, 0, 30, tzinfo=UTC))


@pytest.fixture(params=BACKENDS)
def store(request, tmp_path, monkeypatch):
    """An open store (SQLite; PostgreSQL too when the suite has one) for this test."""
    from iterflow.store import open_store

    monkeypatch.setenv("ITERFLOW_HOME", str(tmp_path / "home"))
    monkeypatch.delenv("ITERFLOW_STORE_URL", raising=False)
    with contextlib.ExitStack() as stack:
        if request.param == "sqlite":
            url = f"sqlite:///{tmp_path / 'store.db'}"
        else:
            url = stack.enter_context(postgres_schema("sched"))
        st = open_store(url)
        yield st
        st.close()

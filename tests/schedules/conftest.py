"""Fixtures for the schedule tests: a store per test, a clock the test moves."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest


class FakeClock:
    """A clock that stands still until the test moves it (``clock.now = ...``)."""

    def __init__(self, now: datetime) -> None:
        self.now = now

    def __call__(self) -> datetime:
        return self.now


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock(datetime(2026, 1, 1, 10, 0, 30, tzinfo=UTC))


@pytest.fixture
def store(tmp_path, monkeypatch):
    """An open SQLite store under this test's ITERFLOW_HOME."""
    from iterflow.store import open_store

    monkeypatch.setenv("ITERFLOW_HOME", str(tmp_path / "home"))
    monkeypatch.delenv("ITERFLOW_STORE_URL", raising=False)
    st = open_store(f"sqlite:///{tmp_path / 'store.db'}")
    yield st
    st.close()

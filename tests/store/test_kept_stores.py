"""Stores opened by ``flow.run(store=URL)``, kept for the next run on the same file only."""

from __future__ import annotations

import sqlite3

import pytest

from iterflow import Flow, task
from iterflow.errors import StoreError
from iterflow.store import kept_stores, list_runs
from iterflow.store.runstore import RunStore


@task
def inc(x):
    return x + 1


def _flow() -> Flow:
    with Flow("kept store") as flow:
        inc(inc(1))
    return flow


@pytest.fixture
def opened(monkeypatch):
    """Every RunStore opened during the test, in order; none kept from before it."""
    kept_stores.close_all()
    made: list[RunStore] = []
    init = RunStore.__init__

    def tracking_init(self, *args, **kwargs):
        init(self, *args, **kwargs)
        made.append(self)

    monkeypatch.setattr(RunStore, "__init__", tracking_init)
    yield made
    kept_stores.close_all()


def test_the_next_run_on_the_same_file_takes_the_store_back(tmp_path, opened):
    url = f"sqlite:///{tmp_path}/kept.db"
    flow = _flow()
    states = [flow.run(store=url) for _ in range(3)]
    assert all(s.is_successful() for s in states)
    assert len(opened) == 1
    assert [r.run_id for r in list_runs(store=url)][::-1] == [s.run_id for s in states]


def test_a_replaced_store_file_is_opened_again(tmp_path, opened):
    path = tmp_path / "replaced.db"
    url = f"sqlite:///{path}"
    flow = _flow()
    flow.run(store=url)
    for name in ("replaced.db", "replaced.db-wal", "replaced.db-shm"):
        (tmp_path / name).unlink(missing_ok=True)
    state = flow.run(store=url)  # a new file at the same path (the old one is still open)
    assert len(opened) == 2
    assert opened[0].engine.pool.checkedin() == 0  # the old file's store was closed
    assert [r.run_id for r in list_runs(store=url)] == [state.run_id]


def test_a_store_upgraded_meanwhile_is_opened_again_and_refused(tmp_path, opened):
    path = tmp_path / "newer.db"
    url = f"sqlite:///{path}"
    flow = _flow()
    flow.run(store=url)
    with sqlite3.connect(path) as conn:  # a newer iterflow in another process upgraded it
        conn.execute("UPDATE schema_version SET version = version + 1")
    with pytest.raises(StoreError, match="newer iterflow"):
        flow.run(store=url)
    assert opened[0].engine.pool.checkedin() == 0  # the kept store was closed


def test_a_store_that_can_no_longer_be_written_is_opened_again_and_refused(
    tmp_path, opened, monkeypatch
):
    url = f"sqlite:///{tmp_path}/locked.db"
    flow = _flow()
    flow.run(store=url)
    monkeypatch.setattr("iterflow.store.db.sqlite_writable", lambda path: False)
    with pytest.raises(StoreError, match="read-only"):
        flow.run(store=url)
    assert opened[0].engine.pool.checkedin() == 0  # the kept store was closed


def test_another_home_is_another_store(tmp_path, opened, monkeypatch):
    url = f"sqlite:///{tmp_path}/shared.db"
    flow = _flow()
    monkeypatch.setenv("ITERFLOW_HOME", str(tmp_path / "one"))
    flow.run(store=url)
    monkeypatch.setenv("ITERFLOW_HOME", str(tmp_path / "two"))
    flow.run(store=url)
    assert len(opened) == 2
    assert opened[1].home == tmp_path / "two"


def test_at_most_keep_stores_are_kept(tmp_path, opened, monkeypatch):
    monkeypatch.setattr(kept_stores, "KEEP", 2)
    flow = _flow()
    for name in ("a", "b", "c", "a"):
        flow.run(store=f"sqlite:///{tmp_path}/{name}.db")
    assert len(opened) == 4  # a was closed when c was kept, then opened again
    assert opened[0].engine.pool.checkedin() == 0  # closed: its connections are gone


def test_a_run_given_an_open_store_leaves_it_alone(tmp_path, opened):
    url = f"sqlite:///{tmp_path}/mine.db"
    with RunStore(url) as store:
        _flow().run(store=store)
        _flow().run(store=url)
    assert len(opened) == 2  # the URL's run did not take the caller's store

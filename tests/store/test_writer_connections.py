"""Writer connections kept between runs: the same file only, never a replaced one."""

from __future__ import annotations

import os

import pytest

import iterflow
from iterflow import LOOP, Flow, task
from iterflow.store import iterations, open_store, writer_connections


@task
def spin(n):
    if iterflow.context.loop_index < n:
        raise LOOP(result=iterflow.context.loop_index)
    return n


def _flow() -> Flow:
    with Flow("kept writer") as flow:
        spin(5)
    return flow


def _kept(path) -> list:
    found = os.stat(path)
    return [conn for key, idle in writer_connections._idle.items()
            if key[1:3] == (found.st_dev, found.st_ino) for conn in idle]


def test_the_next_run_on_the_same_file_takes_the_writer_connection_back(tmp_path):
    url = f"sqlite:///{tmp_path}/kept.db"
    flow = _flow()
    first = flow.run(store=url)
    [kept] = _kept(tmp_path / "kept.db")
    raw = kept.connection.driver_connection
    second = flow.run(store=url)
    [again] = _kept(tmp_path / "kept.db")
    assert again.connection.driver_connection is raw  # the same sqlite3 connection
    with open_store(url) as store:
        for state in (first, second):
            assert [r.loop_index for r in iterations(state.run_id, "spin", store=store)] == [
                0, 1, 2, 3, 4, 5]


def test_a_replaced_store_file_gets_a_connection_of_its_own(tmp_path):
    path = tmp_path / "replaced.db"
    url = f"sqlite:///{path}"
    flow = _flow()
    flow.run(store=url)
    [old] = _kept(path)
    for name in ("replaced.db", "replaced.db-wal", "replaced.db-shm"):
        (tmp_path / name).unlink(missing_ok=True)
    state = flow.run(store=url)  # a new file at the same path
    with open_store(url) as store:
        assert [r.run_id for r in store.list_runs()] == [state.run_id]
        assert len(iterations(state.run_id, "spin", store=store)) == 6
    assert all(conn is not old for conn in _kept(path))


def test_a_writer_that_failed_keeps_nothing(tmp_path):
    url = f"sqlite:///{tmp_path}/failed.db"
    with open_store(url) as store:
        sink = store.sink()
        sink._error = iterflow.errors.StoreError("the disk is full (a test)")
        sink._error_seen = True
        conn = sink._conn = store.write_connection()
        sink.close()
    assert conn.closed
    assert _kept(tmp_path / "failed.db") == []


@pytest.mark.parametrize("keep", [0, 1])
def test_at_most_keep_connections_wait_per_file(tmp_path, monkeypatch, keep):
    monkeypatch.setattr(writer_connections, "KEEP", keep)
    url = f"sqlite:///{tmp_path}/few.db"
    with open_store(url) as store:
        conns = [store.write_connection() for _ in range(3)]
        for conn in conns:
            writer_connections.give_back(store, conn)
        assert len(_kept(tmp_path / "few.db")) == keep
        assert sum(conn.closed for conn in conns) == 3 - keep
        while writer_connections.take(store) is not None:
            pass


def test_only_the_files_written_to_last_keep_their_connections(tmp_path):
    # A process writing to many files in turn (a test suite, a store per tenant)
    # must not keep a connection, three open files, for each file it ever wrote.
    flow = _flow()
    paths = [tmp_path / f"tenant{i}.db" for i in range(writer_connections.FILES + 3)]
    raws = []
    for path in paths:
        assert flow.run(store=f"sqlite:///{path}").is_successful()
        [conn] = _kept(path)
        raws.append(conn.connection.driver_connection)
    kept = [path for path in paths if _kept(path)]
    assert kept == paths[-writer_connections.FILES:]
    for raw in raws[:-writer_connections.FILES]:  # the others were closed
        with pytest.raises(Exception, match="closed"):
            raw.execute("SELECT 1")

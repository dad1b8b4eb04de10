"""Bad input (DESIGN §7.11, §8): results that cannot be recorded, stores that cannot be
opened, the JSON serializer, results too big for the database."""

from __future__ import annotations

import re
import sqlite3
import threading
import time

import pytest

import iterflow
from iterflow import LOOP, Flow, task
from iterflow.errors import SerializationError, StoreError
from iterflow.store import iterations, list_runs, load_result, open_store, task_runs


def flow_with_loop_result(
    make_value, *, name="looper", serializer=None, flow_serializer=None, calls=None
):
    """A flow whose task loops 3 times; iteration 1 raises LOOP(result=make_value())."""

    @task(name=name, serializer=serializer)
    def looper():
        i = iterflow.context.loop_index
        if calls is not None:
            calls.append(i)
        if i == 2:
            return "done"
        raise LOOP(result=make_value() if i == 1 else i)

    with Flow("bad input", serializer=flow_serializer) as flow:
        t = looper()
    return flow, t


def _generator():
    yield 1


@pytest.mark.parametrize(
    ("make_value", "type_name"),
    [(threading.Lock, "_thread.lock"), (_generator, "generator")],
    ids=["lock", "generator"],
)
def test_an_unserializable_loop_result_fails_the_task_run(store_url, make_value, type_name):
    flow, t = flow_with_loop_result(make_value, name="holds a lock")
    state = flow.run(store=store_url)
    assert state.is_failed()
    failed = state.result[t]
    assert failed.is_failed() and isinstance(failed.result, SerializationError)
    for part in ("'holds a lock'", "iteration 1", type_name):
        assert part in failed.message, f"{part!r} is not in {failed.message!r}"

    # The store has the failure, with the same message, and no Looped for iteration 1.
    (info,) = task_runs(state.run_id, store=store_url)
    assert (info.state, info.message) == ("Failed", failed.message)
    history = iterations(state.run_id, "holds a lock", store=store_url)
    assert [(h.state, h.loop_index) for h in history] == [("Looped", 0), ("Failed", 1)]
    assert list_runs(store=store_url)[0].state == "Failed"


@pytest.mark.parametrize("make_value", [threading.Lock, _generator], ids=["lock", "generator"])
def test_without_a_store_the_same_loop_result_is_fine(home, make_value):
    flow, t = flow_with_loop_result(make_value)
    state = flow.run(store=None)
    assert state.is_successful()
    assert (state.result[t].result, state.result[t].loop_count) == ("done", 3)
    assert list(home.iterdir()) == []


GARBAGE = b"these bytes are not a SQLite database\n" * 50


def test_a_store_file_that_is_not_a_database_is_refused_before_any_task_runs(home):
    db = home / "iterflow.db"
    db.write_bytes(GARBAGE)
    calls: list[int] = []
    flow, _ = flow_with_loop_result(lambda: 1, calls=calls)
    with pytest.raises(StoreError, match=re.escape(str(db.resolve()))) as refused:
        flow.run()
    assert "not" in str(refused.value) and "database" in str(refused.value)
    assert calls == [], "a task ran although the store could not be opened"
    assert db.read_bytes() == GARBAGE, "the foreign file was changed"
    assert sorted(p.name for p in home.iterdir()) == ["iterflow.db"]


def test_a_store_from_a_newer_iterflow_is_refused_before_any_task_runs(home):
    flow, _ = flow_with_loop_result(lambda: 1)
    assert flow.run().is_successful()  # creates the store
    db = home / "iterflow.db"
    with sqlite3.connect(db) as conn:
        conn.execute("UPDATE schema_version SET version = 999")
    conn.close()
    calls: list[int] = []
    flow, _ = flow_with_loop_result(lambda: 1, calls=calls)
    with pytest.raises(StoreError, match=re.escape(str(db.resolve())) + ".*newer") as refused:
        flow.run()
    assert "999" in str(refused.value)
    assert calls == []


@pytest.mark.parametrize("where", ["task", "flow"])
def test_the_json_serializer_records_json(store_url, where):
    value = {"seen": [1, 2], "name": "x", "nested": {"ok": True}}
    options = {"serializer": "json"} if where == "task" else {"flow_serializer": "json"}
    flow, t = flow_with_loop_result(lambda: value, **options)
    state = flow.run(store=store_url)
    assert state.is_successful(), state.result[t].message
    history = iterations(state.run_id, "looper", store=store_url)
    assert [(h.state, h.serializer) for h in history] == [
        ("Looped", "json"),
        ("Looped", "json"),
        ("Success", "json"),
    ]
    assert load_result(history[1].result_id, store=store_url) == value
    assert history[1].preview == repr(value)


@pytest.mark.parametrize("where", ["task", "flow"])
def test_the_json_serializer_refuses_what_json_cannot_hold(store_url, where):
    options = {"serializer": "json"} if where == "task" else {"flow_serializer": "json"}
    flow, t = flow_with_loop_result(lambda: {1, 2, 3}, **options)
    state = flow.run(store=store_url)
    failed = state.result[t]
    assert failed.is_failed()
    for part in ("'looper'", "iteration 1", "set", "'json'"):
        assert part in failed.message, f"{part!r} is not in {failed.message!r}"
    assert flow.run(store=None).is_successful()


MIB = 1024 * 1024


def test_a_result_over_1_mib_goes_to_a_file_and_resumes(store_url, home):
    fail_at = {"i": 2}
    calls: list[int] = []

    @task
    def grow(n):
        i = iterflow.context.loop_index
        calls.append(i)
        if i == fail_at.get("i"):
            raise RuntimeError("stop here")
        value = iterflow.context.get("loop_result", b"x" * (3 * MIB // 2)) + bytes([i])
        if i < n - 1:
            raise LOOP(result=value)
        return value

    with Flow("big") as flow:
        t = grow(4)
    run_id = flow.run(store=store_url).run_id
    assert calls == [0, 1, 2]
    history = iterations(run_id, "grow", store=store_url)
    assert [h.state for h in history] == ["Looped", "Looped", "Failed"]
    assert all(h.size > MIB for h in history[:2])
    files = sorted((home / "results").rglob("*"))
    files = [f for f in files if f.is_file()]
    assert len(files) == 2 and all(f.stat().st_size > MIB for f in files)
    assert all(run_id in str(f) for f in files)
    assert history[1].preview.startswith("b'xxxx") and len(history[1].preview) <= 200

    fail_at.clear()
    state = flow.run(resume=run_id, store=store_url)
    assert calls == [0, 1, 2, 2, 3], "the resumed loop did not continue at iteration 2"
    assert state.is_successful() and state.run_id == run_id
    assert state.result[t].result == b"x" * (3 * MIB // 2) + bytes([0, 1, 2, 3])


def test_a_locked_database_fails_the_run_clearly_and_keeps_what_was_committed(home):
    # Another program takes the write lock in iteration 60 and holds it.
    db = home / "iterflow.db"
    url = f"sqlite:///{db}"
    holder: list[sqlite3.Connection] = []
    calls: list[int] = []

    @task
    def count():
        i = iterflow.context.loop_index
        calls.append(i)
        if i == 60 and not holder:
            holder.append(sqlite3.connect(db, isolation_level=None))
            holder[0].execute("BEGIN IMMEDIATE")
        if i < 300:
            time.sleep(0.002)
            raise LOOP(result=i)
        return i

    with Flow("locked") as flow:
        count()
    store = open_store(url, lock_timeout=0.3)
    try:
        with pytest.raises(StoreError, match=re.escape(str(db.resolve())) + ".*locked"):
            flow.run(store=store)
    finally:
        store.close()
        if holder:
            holder[0].execute("ROLLBACK")
            holder[0].close()
    assert max(calls) < 300, "the loop went on unrecorded"

    (run,) = list_runs(store=url)
    looped = [h.loop_index for h in iterations(run.run_id, "count", store=url)]
    assert looped == list(range(len(looped))) and len(looped) >= 3
    # This process is alive but gave the run up: once its heartbeat is old it
    # counts as Crashed, and resumes after what was committed.
    calls.clear()
    with open_store(url, stale_after=0.0) as impatient:
        state = flow.run(resume=run.run_id, store=impatient)
    assert state.is_successful() and state.run_id == run.run_id
    assert calls[0] == len(looped) and calls[-1] == 300

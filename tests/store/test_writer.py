"""The event sink: what it records, when it commits, and how it fails."""

from __future__ import annotations

import threading
import time

import pytest
import sqlalchemy as sa

from iterflow.errors import SerializationError, StoreError
from iterflow.states import Failed, Looped, Mapped, Pending, Retrying, Running, Success
from iterflow.store import metrics, open_store
from iterflow.store.results import FILE_THRESHOLD

from .helpers import RunEvents


def rows(store, sql: str, **params):
    with store.engine.connect() as conn:
        return conn.execute(sa.text(sql), params).all()


def looped_count(store, run_id: str) -> int:
    return rows(
        store,
        "SELECT count(*) FROM state_transitions s JOIN flow_runs f ON f.id = s.flow_run "
        "WHERE f.run_id = :r AND s.kind = 'Looped'",
        r=run_id,
    )[0][0]


def wait_for(predicate, timeout: float = 5.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.01)
    return predicate()


# -- what is recorded -------------------------------------------------------------------


def test_a_loop_is_recorded_iteration_by_iteration(store, sink):
    run = RunEvents(sink, flow_name="acc")
    run.start(parameters={"n": 3}, tasks=(("acc-1", "accumulate"),))
    run.loop("acc-1", [1, 3, 6], final=10, name="accumulate")
    run.finish()
    sink.flush()

    history = store.iterations(run.run_id, "accumulate")
    assert [(h.state, h.loop_index, h.preview) for h in history] == [
        ("Looped", 0, "1"), ("Looped", 1, "3"), ("Looped", 2, "6"), ("Success", 3, "10"),
    ]
    assert [store.load_result(h.result_id) for h in history] == [1, 3, 6, 10]
    (task_run,) = store.task_runs(run.run_id)
    assert (task_run.state, task_run.loop_count, task_run.loop_index) == ("Success", 4, 3)
    assert task_run.result_preview == "10"
    info = store.get_run(run.run_id)
    assert (info.state, info.flow_name, info.parameters) == ("Success", "acc", {"n": 3})
    assert info.ended is not None and info.started <= info.ended


def test_running_after_looped_and_pending_are_not_rows(store, sink):
    # The choice documented in writer.py: the Running that follows each Looped
    # is implied by it; Pending is not history. Starts and restarts are kept
    # (a start only when the task run is still open at its batch's end: the flush).
    run = RunEvents(sink)
    run.start()
    run.task("t", Pending())
    run.task("t", Running(loop_index=0))
    sink.flush()
    run.task("t", Looped(result=1, loop_index=0))
    run.task("t", Running(loop_index=1), loop_index=1)
    run.task("t", Retrying("boom", loop_index=1), loop_index=1)
    run.task("t", Running(loop_index=1), loop_index=1)
    run.task("t", Success(result=2, loop_count=2), loop_index=1)
    run.finish()
    sink.flush()
    kinds = rows(
        store,
        "SELECT s.kind, s.loop_index FROM state_transitions s "
        "JOIN task_runs t ON t.id = s.task_run WHERE t.task_run_id = :t ORDER BY s.id",
        t=run.task_run_id("t"),
    )
    assert [tuple(r) for r in kinds] == [
        ("Running", 0), ("Looped", 0), ("Retrying", 1), ("Running", 1), ("Success", 1),
    ]
    # The flow run's own states are recorded too (task_run NULL).
    flow_kinds = rows(
        store,
        "SELECT s.kind FROM state_transitions s JOIN flow_runs f ON f.id = s.flow_run "
        "WHERE f.run_id = :r AND s.task_run IS NULL ORDER BY s.id",
        r=run.run_id,
    )
    assert [r[0] for r in flow_kinds] == ["Running", "Success"]


def test_a_mutated_loop_result_keeps_its_recorded_value(store, sink):
    run = RunEvents(sink)
    run.start()
    carried = [0]
    for i in range(3):
        run.task("t", Running(loop_index=i), loop_index=i)
        run.task("t", Looped(result=carried, loop_index=i), loop_index=i)
        carried.append(i + 1)  # the next iteration mutates the same object
    sink.flush()
    values = [store.load_result(h.result_id) for h in store.iterations(run.run_id, "t")]
    assert values == [[0], [0, 1], [0, 1, 2]]


def test_unserializable_loop_result_names_task_iteration_and_type(store, sink):
    run = RunEvents(sink)
    run.start()
    run.task("t", Running(loop_index=4), loop_index=4, name="train")
    with pytest.raises(SerializationError) as caught:
        run.task("t", Looped(result=threading.Lock(), loop_index=4), loop_index=4, name="train")
    message = str(caught.value)
    assert "task 'train'" in message and "iteration 4" in message
    assert "_thread.lock" in message
    assert "store=None" in message and "json" in message
    # Nothing half-recorded, and the sink still works (the runner records Failed).
    run.task("t", Failed("cannot record"), loop_index=4)
    sink.flush()
    assert looped_count(store, run.run_id) == 0
    assert store.task_runs(run.run_id)[0].state == "Failed"


def test_unserializable_final_result_also_raises(sink):
    run = RunEvents(sink)
    run.start()
    with pytest.raises(SerializationError, match=r"result of task 't' \(map_index 2\)"):
        run.task("t", Success(result=threading.Lock()), map_index=2)


def test_json_serializer(store, sink):
    run = RunEvents(sink)
    run.start()
    run.task("t", Looped(result={"k": (1, 2)}, loop_index=0), serializer="json")
    with pytest.raises(SerializationError, match=r"with 'json'.*JSON-friendly"):
        run.task("t", Looped(result={1, 2}, loop_index=1), loop_index=1, serializer="json")
    with pytest.raises(SerializationError, match="serializer 'yaml'"):
        run.task("t", Looped(result=1, loop_index=1), loop_index=1, serializer="yaml")
    sink.flush()
    (history,) = store.iterations(run.run_id, "t")
    assert history.serializer == "json"
    assert store.load_result(history.result_id) == {"k": [1, 2]}


def test_failed_state_keeps_an_unpicklable_exception_as_a_preview(store, sink):
    class Unpicklable(Exception):
        def __reduce__(self):
            raise TypeError("no pickling")

    run = RunEvents(sink)
    run.start()
    run.task("t", Running())
    failed = Failed("it broke", Unpicklable("bad"))
    failed.traceback = "Traceback (most recent call last): ..."
    run.task("t", failed)  # must not raise: the failure is what matters
    sink.flush()
    (history,) = store.iterations(run.run_id, "t")
    assert history.state == "Failed" and history.message == "it broke"
    assert history.traceback.startswith("Traceback")
    assert "Unpicklable('bad')" in history.preview
    with pytest.raises(StoreError, match="only its preview"):
        store.load_result(history.result_id)


def test_large_result_goes_to_a_file_under_iterflow_home(store, sink, home):
    value = "x" * (FILE_THRESHOLD + 10)
    run = RunEvents(sink)
    run.start()
    run.task("t", Looped(result=value, loop_index=0))
    sink.flush()
    (history,) = store.iterations(run.run_id, "t")
    # The state's row keeps the preview; a results row keeps the file's path.
    ((path, data, inline),) = rows(
        store,
        "SELECT r.path, r.data, s.data FROM state_transitions s "
        "JOIN results r ON r.id = s.result_id WHERE s.id = :i",
        i=history.result_id,
    )
    assert data is None and inline is None and path.startswith(str(home / "results"))
    assert history.size > FILE_THRESHOLD
    assert history.preview.startswith("'xxx") and len(history.preview) <= 200
    assert store.load_result(history.result_id) == value


class Bomb:
    """Unpickling it raises: shows that displays never unpickle."""

    def __reduce__(self):
        return (_explode, ())

    def __repr__(self):
        return "Bomb()"


def _explode():
    raise RuntimeError("unpickled!")


def test_previews_are_shown_without_unpickling(store, sink):
    run = RunEvents(sink)
    run.start()
    run.loop("t", [Bomb()], final=Bomb())
    run.finish()
    sink.flush()
    assert [h.preview for h in store.iterations(run.run_id, "t")] == ["Bomb()", "Bomb()"]
    assert store.task_runs(run.run_id)[0].result_preview == "Bomb()"
    assert store.list_runs()[0].run_id == run.run_id
    with pytest.raises(RuntimeError, match="unpickled!"):
        store.load_result(store.iterations(run.run_id, "t")[0].result_id)


def test_none_results_store_no_value(store, sink):
    run = RunEvents(sink)
    run.start()
    run.loop("t", [None, None], final=None)
    sink.flush()
    history = store.iterations(run.run_id, "t")
    assert [(h.result_id, h.preview, h.size) for h in history] == [(None, None, None)] * 3
    assert rows(store, "SELECT count(*) FROM results")[0][0] == 0
    assert rows(store, "SELECT count(*) FROM state_transitions WHERE data IS NOT NULL")[0][0] == 0


def test_mapped_parent_result_is_not_stored_twice(store, sink):
    run = RunEvents(sink)
    run.start()
    children = []
    for i in range(3):
        run.task("m", Running(), map_index=i)
        children.append(Success(result=i * 10, loop_count=1))
        run.task("m", children[-1], map_index=i)
    run.task("m", Mapped(map_states=children))
    sink.flush()
    assert rows(store, "SELECT count(*) FROM state_transitions WHERE data IS NOT NULL")[0][0] == 3
    states = {(t.map_index, t.state) for t in store.task_runs(run.run_id)}
    assert states == {(None, "Mapped"), (0, "Success"), (1, "Success"), (2, "Success")}


def test_logs_are_recorded(store, sink):
    run = RunEvents(sink)
    run.start()
    run.task("a", Running(), name="alpha")
    run.task("b", Running(), name="beta")
    run.log("from a", slug="a", loop_index=0)
    run.log("from b", slug="b", level=40)
    run.log("from the engine")
    sink.flush()
    assert [e.message for e in store.logs(run.run_id)] == ["from a", "from b", "from the engine"]
    (only_b,) = store.logs(run.run_id, task="beta")
    assert (only_b.message, only_b.level_name, only_b.task_slug) == ("from b", "ERROR", "b")
    assert [e.message for e in store.logs(run.run_id, task="a")] == ["from a"]


def test_logs_after_a_line_return_only_newer_ones_in_order(store, sink):
    run = RunEvents(sink)
    run.start()
    run.task("a", Running(), name="alpha")
    for i in range(3):
        run.log(f"first {i}", slug="a", loop_index=i)
    sink.flush()
    first = store.logs(run.run_id)
    assert [e.message for e in first] == ["first 0", "first 1", "first 2"]
    assert [e.id for e in first] == sorted({e.id for e in first})
    assert store.logs(run.run_id, after=first[-1].id) == []
    # Lines committed in a later batch, interleaved with another run's.
    other = RunEvents(sink)
    other.start()
    for i in range(700):  # more than one INSERT's worth
        run.log(f"second {i}", slug="a")
        other.log("elsewhere")
    sink.flush()
    newer = store.logs(run.run_id, after=first[-1].id)
    assert [e.message for e in newer] == [f"second {i}" for i in range(700)]
    assert [e.message for e in store.logs(run.run_id, after=newer[349].id)] == [
        f"second {i}" for i in range(350, 700)
    ]
    assert store.logs(run.run_id, task="alpha", after=first[0].id)[0].message == "first 1"


# -- when it commits -----------------------------------------------------------------------


def test_events_wait_for_a_batch_until_flush(store):
    sink = store.sink(batch_interval=30, batch_size=10_000)
    run = RunEvents(sink)
    run.start()  # flow events are committed at once
    run.loop("t", list(range(50)), final=0)
    time.sleep(0.1)
    assert looped_count(store, run.run_id) == 0  # still waiting for its batch
    sink.flush()
    assert looped_count(store, run.run_id) == 50
    sink.close()


def test_a_full_batch_commits_without_flush(store):
    sink = store.sink(batch_interval=30, batch_size=20)
    run = RunEvents(sink)
    run.start()
    run.loop("t", list(range(45)), final=0)  # 45 Looped + 2 more records
    assert wait_for(lambda: looped_count(store, run.run_id) >= 40)
    sink.close()
    assert looped_count(store, run.run_id) == 45


def test_batches_commit_within_the_interval(store):
    sink = store.sink(batch_interval=0.05)
    run = RunEvents(sink)
    run.start()
    run.task("t", Looped(result=1, loop_index=0))
    # Committed by the interval alone: no flush, and one record is far from a full batch.
    assert wait_for(lambda: looped_count(store, run.run_id) == 1, timeout=5)
    sink.close()


def test_sync_events_are_committed_before_handle_returns(store):
    sink = store.sink(batch_interval=30, batch_size=10_000)
    run = RunEvents(sink)
    run.start()
    run.task("t", Running())
    for i in range(3):
        run.task("t", Looped(result=i, loop_index=i), loop_index=i, sync=True)
        assert looped_count(store, run.run_id) == i + 1
    sink.close()


def test_close_commits_and_then_refuses_events(store):
    sink = store.sink(batch_interval=30, batch_size=10_000)
    run = RunEvents(sink)
    run.start()
    run.loop("t", [1, 2], final=3)
    sink.close()
    assert looped_count(store, run.run_id) == 2
    sink.close()  # twice is fine
    with pytest.raises(StoreError, match="closed"):
        run.task("t", Running())


def test_flush_waits_for_the_transaction_in_flight(store, monkeypatch):
    # flush() returns at once when nothing is queued and nothing is being written; a
    # batch the writer took (the queue is empty again) but has not committed counts.
    write = store.write
    entered, gate = threading.Event(), threading.Event()

    def gated_write(fn, **options):
        entered.set()
        assert gate.wait(10)
        return write(fn, **options)

    sink = store.sink(batch_interval=0.01)
    run = RunEvents(sink)
    run.start()
    sink.flush()  # nothing queued: returns without a round trip
    monkeypatch.setattr(store, "write", gated_write)
    run.task("t", Looped(result=1, loop_index=0), loop_index=0)  # one record: one batch
    assert entered.wait(5)  # the writer holds it
    assert not sink._buffer
    flushed = threading.Event()
    flusher = threading.Thread(target=lambda: (sink.flush(), flushed.set()))
    flusher.start()
    assert not flushed.wait(0.2)  # still in flight: flush waits for it
    gate.set()
    assert flushed.wait(5)
    assert looped_count(store, run.run_id) == 1
    flusher.join()
    sink.close()


def test_flush_commits_metrics_waiting_in_their_own_queue(store):
    sink = store.sink(batch_interval=30)  # the writer wakes only when asked
    run = RunEvents(sink)
    run.start()
    sink.flush()
    sink.record_metric(run.run_id, None, 0, None, "loss", 0.5, time.time())
    assert sink._metrics and not sink._buffer
    sink.flush()  # must not take the empty buffer for nothing pending
    assert not sink._metrics
    assert [m.value for m in metrics(run.run_id, store=store)] == [0.5]
    sink.close()


def test_memory_stays_flat_with_back_pressure(store, monkeypatch):
    # A slow database must make handle() wait, not pile events up in memory.
    write = store.write

    def slow_write(fn, **options):
        time.sleep(0.01)
        return write(fn, **options)

    monkeypatch.setattr(store, "write", slow_write)
    sink = store.sink(batch_interval=0.01, batch_size=20, max_pending=50)
    run = RunEvents(sink)
    run.start()
    largest = 0
    for i in range(400):
        run.task("t", Looped(result=i, loop_index=i), loop_index=i)
        largest = max(largest, len(sink._buffer))
    sink.close()
    assert largest <= 50
    assert looped_count(store, run.run_id) == 400


def test_heartbeat_is_kept_while_the_run_is_open(store):
    sink = store.sink(heartbeat_interval=0.05)
    run = RunEvents(sink)
    run.start()
    first = store.get_run(run.run_id).heartbeat
    assert wait_for(lambda: store.get_run(run.run_id).heartbeat > first, timeout=3)
    info = store.get_run(run.run_id)
    assert info.state == "Running" and info.pid is not None and info.host
    run.finish()
    sink.close()
    assert store.get_run(run.run_id).state == "Success"


# -- how it fails ----------------------------------------------------------------------------


def test_locked_database_fails_clearly_and_keeps_what_was_committed(sqlite_url):
    store = open_store(sqlite_url, lock_timeout=0.3)
    sink = store.sink(batch_interval=30, batch_size=10_000)
    run = RunEvents(sink)
    run.start()
    run.loop("t", [1, 2, 3], end=Running(loop_index=3))
    sink.flush()

    blocker = sa.create_engine(sqlite_url).raw_connection()
    blocker.isolation_level = None
    blocker.execute("BEGIN IMMEDIATE")  # another process holds the write lock
    try:
        run.task("t", Looped(result=4, loop_index=3), loop_index=3)
        with pytest.raises(StoreError, match=r"locked.*Everything committed before"):
            sink.flush()
        with pytest.raises(StoreError, match="locked"):
            run.task("t", Running(loop_index=4), loop_index=4)
    finally:
        blocker.execute("ROLLBACK")
        blocker.close()
    sink.close()  # the error was seen: close does not raise it again
    assert looped_count(store, run.run_id) == 3
    store.close()


def test_a_short_lock_is_waited_out(sqlite_url):
    store = open_store(sqlite_url, lock_timeout=10)
    sink = store.sink(batch_interval=30, batch_size=10_000)
    run = RunEvents(sink)
    run.start()
    blocker = sa.create_engine(sqlite_url).raw_connection()
    blocker.isolation_level = None
    blocker.execute("BEGIN IMMEDIATE")
    threading.Timer(0.3, lambda: blocker.execute("ROLLBACK")).start()
    run.loop("t", [1, 2], final=3)
    sink.close()  # waits for the lock, then commits
    blocker.close()
    assert looped_count(store, run.run_id) == 2
    store.close()


def test_a_finishing_run_reads_live_until_its_end_is_committed(sqlite_url):
    # A dashboard in the driving process judges a run recorded live by whether this
    # process still drives it. Let go before the end is committed, a live page read
    # the finishing run as Crashed (and stopped following it, never to see Success).
    store = open_store(sqlite_url, lock_timeout=10)
    sink = store.sink(batch_interval=30, batch_size=10_000)
    run = RunEvents(sink)
    run.start()
    sink.flush()
    blocker = sa.create_engine(sqlite_url).raw_connection()
    blocker.isolation_level = None
    blocker.execute("BEGIN IMMEDIATE")  # the end waits for the write lock
    try:
        ending = threading.Thread(target=run.finish)  # (a flow's end waits for its commit)
        ending.start()
        time.sleep(0.3)  # the writer is at the lock with the end
        info = store.get_run(run.run_id)
        assert (info.recorded_state, info.state) == ("Running", "Running")
    finally:
        blocker.execute("ROLLBACK")
        blocker.close()
    ending.join()
    assert store.get_run(run.run_id).state == "Success"
    # Resumed at once in the same process: driven again, whatever the order of the
    # end's commit and the new start.
    run.start(resumed=True)
    run.finish()
    run.start(resumed=True)
    sink.flush()
    assert store.get_run(run.run_id).state == "Running"
    sink.close()
    assert store.get_run(run.run_id).state == "Crashed"  # the sink closed on a live run
    store.close()


def test_full_disk_fails_clearly_and_keeps_what_was_committed(sqlite_url):
    store = open_store(sqlite_url)
    sink = store.sink(batch_interval=30, batch_size=200)
    run = RunEvents(sink)
    run.start()
    run.loop("t", list(range(10)), end=Running(loop_index=10))
    sink.flush()

    # From now on the database may not grow: SQLite reports SQLITE_FULL, exactly
    # as on a full disk.
    def cap(dbapi_connection, _record):
        pages = dbapi_connection.execute("PRAGMA page_count").fetchone()[0]
        dbapi_connection.execute(f"PRAGMA max_page_count = {pages}")

    sa.event.listen(store.engine, "connect", cap)
    store.engine.dispose()
    if sink._conn is not None:  # the connection the writer keeps (see StoreSink._write)
        cap(sink._conn.connection.driver_connection, None)
    with pytest.raises(StoreError, match="disk is full"):
        for i in range(10, 5000):
            run.task("t", Looped(result="y" * 1000, loop_index=i), loop_index=i)
        sink.flush()
    with pytest.raises(StoreError, match="disk is full"):
        sink.flush()
    sink.close()
    store.close()

    reopened = open_store(sqlite_url)
    assert looped_count(reopened, run.run_id) == 10
    assert [h.loop_index for h in reopened.iterations(run.run_id, "t")] == list(range(10))
    reopened.close()


def test_keys_of_finished_task_runs_are_not_kept(store):
    # The writer caches each task run's integer key while it is in flight; a run
    # with many task runs (mapped children, block iterations) must not pile them up.
    sink = store.sink()
    run = RunEvents(sink)
    run.start()
    for i in range(1200):
        run.task("m", Running(), map_index=i)
        run.task("m", Success(result=i, loop_count=1), map_index=i)
    run.task("live", Running())
    sink.flush()
    assert list(sink._batches._task_keys) == [run.task_run_id("live")]
    run.finish()
    sink.close()
    assert not sink._batches._task_keys and not sink._batches._run_keys
    keys = rows(store, "SELECT count(*), count(DISTINCT id) FROM task_runs")[0]
    assert tuple(keys) == (1201, 1201)


def test_ids_of_one_batch_never_run_into_the_next(store):
    # A run whose parameters are not JSON keeps them pickled in `results`: that row takes an
    # id of the batch's block too, and the lines after it in the same batch and the next
    # batch must not reuse one. Hold the writer so that all of it lands in one batch.
    import datetime
    import sqlite3

    sink = store.sink(batch_interval=30, batch_size=10_000)
    first = RunEvents(sink)
    first.start()
    blocker = None
    if store.engine.dialect.name == "sqlite":
        blocker = sqlite3.connect(store.engine.url.database, isolation_level=None)
        blocker.execute("BEGIN IMMEDIATE")
    first.log("queued behind the lock")
    flusher = threading.Thread(target=sink.flush)
    flusher.start()
    run = RunEvents(sink)
    starter = threading.Thread(target=run.start,
                               kwargs={"parameters": {"when": datetime.date(2026, 1, 1)}})
    starter.start()
    time.sleep(0.2)
    run.task("t", Running())
    run.log("same batch as the start")  # the batch's last id, and the next batch's first
    if blocker is not None:
        blocker.execute("COMMIT")
        blocker.close()
    starter.join(10)
    flusher.join(10)
    run.log("next batch")
    run.loop("t", [1, 2], final=3)
    sink.flush()
    assert [e.message for e in store.logs(run.run_id)] == [
        "same batch as the start", "next batch",
    ]
    assert store.resume_point(run.run_id).parameters == {"when": datetime.date(2026, 1, 1)}
    sink.close()


def test_the_pending_byte_budget_comes_back_to_zero(store):
    # Big values held until committed count against a budget (back-pressure); whatever
    # handle() counted, the writer gives back once committed, and nothing else.
    sink = store.sink()
    run = RunEvents(sink)
    run.start(parameters={"blob": ("x" * 10_000,)})  # not JSON: pickled, >4 KiB
    huge = 10 ** 12_000  # an int whose pickle is over 4 KiB (and too long for repr)
    run.loop("t", [huge, [0] * 5000], final=huge)
    run.finish()
    sink.flush()
    assert sink._big_bytes == 0
    sink.close()


def test_a_resumed_run_does_not_record_its_parameters_again(store, sink):
    run = RunEvents(sink)
    run.start(parameters={"t": (1, 2)})  # a tuple: pickled into `results`
    run.finish(Failed("boom"))
    run.start(parameters={"t": (1, 2)}, resumed=True)
    run.finish()
    sink.flush()
    assert rows(store, "SELECT count(*) FROM results")[0][0] == 1
    assert store.resume_point(run.run_id).parameters == {"t": (1, 2)}


def test_an_int_too_long_for_repr_is_recorded_with_a_stand_in_preview(store, sink):
    huge = 10 ** 5000  # repr() refuses ints over 4,300 digits
    run = RunEvents(sink)
    run.start()
    run.loop("t", [huge, 7], final=huge + 1)
    sink.flush()
    history = store.iterations(run.run_id, "t")
    assert [store.load_result(h.result_id) for h in history] == [huge, 7, huge + 1]
    assert history[0].preview.startswith("<int object") and history[1].preview == "7"


def test_a_sqlite_built_with_the_old_variable_limit_is_written_in_smaller_statements(sqlite_url):
    # SQLite before 3.32 allows 999 variables per statement (not 32766): the writer's
    # multi-row statements must fit in whatever the library allows.
    import sqlite3

    store = open_store(sqlite_url)

    def old_limit(dbapi_connection, _record):
        dbapi_connection.setlimit(sqlite3.SQLITE_LIMIT_VARIABLE_NUMBER, 999)

    # Every engine: the writer's connection does not come from the store's pool.
    sa.event.listen(sa.engine.Engine, "connect", old_limit)
    try:
        store.engine.dispose()
        sink = store.sink(batch_interval=30, batch_size=5000)
        run = RunEvents(sink)
        run.start()
        run.loop("t", list(range(3000)), final=-1)
        for i in range(1500):  # 1,500 new task runs in one batch: the key lookup too
            run.task("m", Running(), map_index=i)
            run.task("m", Success(result=i, loop_count=1), map_index=i)
            run.log(f"child {i}", slug="m")
        run.finish()
        sink.close()
    finally:
        sa.event.remove(sa.engine.Engine, "connect", old_limit)
    assert looped_count(store, run.run_id) == 3000
    assert len(store.task_runs(run.run_id)) == 1 + 1500
    assert len(store.logs(run.run_id)) == 1500
    store.close()


def test_writers_keep_connections_of_their_own_not_the_pools(sqlite_url):
    # Each busy sink keeps a connection (see StoreSink._write); twenty of them at once
    # must not drain the pool that queries and other writes share (15 connections).
    store = open_store(sqlite_url)
    sinks = [store.sink() for _ in range(20)]
    try:
        for sink in sinks:
            run = RunEvents(sink)
            run.start()
            run.loop("t", [1], final=2)
            sink.flush()  # its writer now holds its connection
        assert all(sink._conn is not None for sink in sinks)
        assert len(store.list_runs(limit=None)) == 20
    finally:
        for sink in sinks:
            sink.close()
        store.close()



def test_a_runs_opening_batch_waits_for_its_end_or_its_size(store):
    # A run's first records wait (no wake, no back-pressure at max_pending) until
    # opening_batch of them do; the first batch with no synchronous record ends that.
    sink = store.sink(batch_interval=30, batch_size=5, max_pending=10, opening_batch=100)
    run = RunEvents(sink)
    run.start()  # synchronous: committed, and the opening goes on
    run.loop("t", list(range(40)), end=Running(loop_index=40))
    assert len(sink._buffer) > 40 and looped_count(store, run.run_id) == 0  # past max_pending
    assert (sink.batch_size, sink.max_pending) == (100, 100)
    run.loop("u", list(range(70)), end=Running(loop_index=70))  # 100 wait: the writer takes them
    assert wait_for(lambda: looped_count(store, run.run_id) >= 60)
    assert (sink.batch_size, sink.max_pending) == (5, 10)  # the sink's own sizes from now on
    run.finish()
    sink.close()
    assert looped_count(store, run.run_id) == 110


def test_a_short_flow_run_is_written_with_its_end(tmp_path, monkeypatch):
    from iterflow import Flow, task
    from iterflow.store import batch

    sizes = []
    commit = batch.BatchRecorder.commit

    def counted(self, records, n_ids, metrics=None):
        sizes.append(len(records))
        return commit(self, records, n_ids, metrics)

    monkeypatch.setattr(batch.BatchRecorder, "commit", counted)
    step = task(lambda x: x + 1, name="inc")
    with Flow("short") as flow:
        last = step(0)
        for _ in range(699):
            last = step(last)
    with open_store(f"sqlite:///{tmp_path}/s.db") as store:
        state = flow.run(store=store)
        assert state.result[last].result == 700
        # Its start, then its 1,400 task records with its end (no batch of 500 in between).
        assert sizes == [1, 1401]
        assert len(store.task_runs(state.run_id)) == 700


def test_a_loops_lane_ends_the_opening_batch(store):
    # A loop's iterations are taken as they come: its first Looped asks for the lane.
    sink = store.sink(batch_size=5, max_pending=10, opening_batch=100)
    assert (sink.batch_size, sink.max_pending) == (100, 100)
    assert sink.looped_lane("t", None) is not None
    assert (sink.batch_size, sink.max_pending) == (5, 10)
    sink.close()

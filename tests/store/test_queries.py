"""The query API: listing runs, finding one, task runs, liveness."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time

import pytest
import sqlalchemy as sa

from iterflow.errors import StoreError
from iterflow.states import Failed, Running, Success
from iterflow.store import get_run, iterations, list_runs, task_runs
from iterflow.store.liveness import HOST, effective_state

from .helpers import RunEvents


def record(sink, run_id: str, flow_name: str = "flow", final=None) -> RunEvents:
    run = RunEvents(sink, run_id=run_id, flow_name=flow_name)
    run.start()
    if final is not None:
        run.finish(final)
    return run


def set_row(store, run_id: str, **values) -> None:
    with store.engine.begin() as conn:
        conn.execute(
            sa.text(
                "UPDATE flow_runs SET " + ", ".join(f"{k} = :{k}" for k in values)
                + " WHERE run_id = :run_id"
            ),
            {**values, "run_id": run_id},
        )


def test_list_runs_newest_first_with_filters(store, sink):
    record(sink, "aaa1", "first", Success())
    time.sleep(0.01)
    record(sink, "bbb2", "second", Failed("no"))
    time.sleep(0.01)
    record(sink, "ccc3", "first", Success())
    sink.flush()
    assert [r.run_id for r in store.list_runs()] == ["ccc3", "bbb2", "aaa1"]
    assert [r.run_id for r in store.list_runs(limit=2)] == ["ccc3", "bbb2"]
    assert [r.run_id for r in store.list_runs(flow_name="first")] == ["ccc3", "aaa1"]
    assert [r.run_id for r in store.list_runs(state="Failed")] == ["bbb2"]
    assert store.list_runs(state="Crashed") == []


def test_records_have_the_cli_json_shape(store, sink):
    run = record(sink, "abc123")
    run.loop("t", [1], final=2, name="task")
    run.finish()
    sink.flush()
    info = store.get_run("abc123").as_dict()
    assert {"run_id", "flow_name", "state", "started", "ended"} <= set(info)
    (task_run,) = store.task_runs("abc123")
    shown = task_run.as_dict()
    assert {"task_name", "map_index", "state", "loop_count", "started", "ended"} <= set(shown)
    assert (shown["task_name"], shown["loop_count"]) == ("task", 2)
    json.dumps([info, shown])  # plain values only


def test_get_run_by_unique_prefix(store, sink):
    record(sink, "abc123", final=Success())
    record(sink, "abd456", final=Success())
    sink.flush()
    assert store.get_run("abc").run_id == "abc123"
    assert store.get_run("abd456").run_id == "abd456"
    with pytest.raises(StoreError, match=r"prefix 'ab' matches more than one run.*abc123"):
        store.get_run("ab")
    with pytest.raises(StoreError, match=r"No run 'zzz' in the run store.*iterflow runs"):
        store.get_run("zzz")
    with pytest.raises(StoreError, match="No run"):
        store.get_run("a%")  # LIKE wildcards are taken literally


def test_module_functions_take_a_store_or_url(store_url, store, sink):
    run = record(sink, "r1", final=Success())
    run.loop("t", [5], final=6)
    sink.flush()
    assert [r.run_id for r in list_runs(store=store)] == ["r1"]
    assert get_run("r1", store=store_url).run_id == "r1"
    assert [t.task_slug for t in task_runs("r1", store=store_url)] == ["t"]
    assert [h.preview for h in iterations("r1", "t", store=store_url)] == ["5", "6"]


def test_iterations_of_mapped_children_need_a_map_index(store, sink):
    run = record(sink, "m1")
    for i in range(2):
        run.loop("m", [i], final=i, map_index=i, name="mapper")
    sink.flush()
    with pytest.raises(StoreError, match=r"mapped: pass map_index \(recorded children: 0..1\)"):
        store.iterations("m1", "mapper")
    assert [h.preview for h in store.iterations("m1", "mapper", map_index=1)] == ["1", "1"]
    with pytest.raises(StoreError, match="no child with map_index 7"):
        store.iterations("m1", "mapper", map_index=7)
    with pytest.raises(StoreError, match="no task run of a task named 'nope'"):
        store.iterations("m1", "nope")


def test_two_tasks_with_one_name_need_the_slug(store, sink):
    run = record(sink, "n1")
    run.task("add-1", Running(), name="add")
    run.task("add-2", Running(), name="add")
    sink.flush()
    with pytest.raises(StoreError, match="add-1, add-2"):
        store.iterations("n1", "add")
    assert store.iterations("n1", "add-2") == []


def test_stale_heartbeat_is_crashed_only_where_the_pid_cannot_be_checked(store, sink):
    record(sink, "live1")
    sink.flush()
    assert store.get_run("live1").state == "Running"
    set_row(store, "live1", heartbeat=time.time() - 3600)
    # On this host a live process is alive whatever its heartbeat says (it may
    # be stopped, or hold the GIL): its run is not Crashed.
    assert store.get_run("live1").state == "Running"
    set_row(store, "live1", host=HOST + "-elsewhere")
    info = store.get_run("live1")
    assert (info.state, info.recorded_state) == ("Crashed", "Running")


def test_gone_process_on_this_host_is_crashed(store, sink):
    record(sink, "gone1")
    sink.flush()
    # A process that has exited (and been reaped): its pid is free.
    dead_pid = int(subprocess.check_output([sys.executable, "-c", "import os; print(os.getpid())"]))
    set_row(store, "gone1", pid=dead_pid)
    assert store.get_run("gone1").state == "Crashed"
    # On another host the pid says nothing; only the heartbeat counts there.
    set_row(store, "gone1", host=HOST + "-elsewhere")
    assert store.get_run("gone1").state == "Running"


def test_effective_state_rules():
    now = time.time()
    alive = os.getpid()
    assert effective_state("Success", None, None, None, stale_after=30) == "Success"
    assert effective_state("Running", alive, HOST, now, stale_after=30, now=now) == "Running"
    assert effective_state("Running", alive, HOST, now - 31, stale_after=30, now=now) == (
        "Running"
    )
    assert effective_state("Pending", alive, HOST, None, stale_after=30) == "Pending"
    elsewhere = HOST + "-elsewhere"
    assert effective_state("Running", alive, elsewhere, now, stale_after=30, now=now) == "Running"
    assert effective_state("Running", alive, elsewhere, now - 31, stale_after=30, now=now) == (
        "Crashed"
    )
    assert effective_state("Pending", None, HOST, None, stale_after=30) == "Crashed"


def test_block_index_is_read_from_the_task_run_id():
    from iterflow.runids import block_index_of

    run = "r1"
    assert block_index_of("r1/fetch", "fetch", None, run) is None
    assert block_index_of("r1/fetch/3", "fetch", 3, run) is None
    assert block_index_of("r1/pages/7/fetch", "fetch", None, run) == 7
    assert block_index_of("r1/pages/7/attempt2/fetch", "fetch", None, run) == 7
    assert block_index_of("r1/pages/7/fetch/2", "fetch", 2, run) == 7
    assert block_index_of("r1/rows/2/cols/5/cell", "cell", None, run) == 5  # the innermost


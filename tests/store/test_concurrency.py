"""Several real processes on one store."""

from __future__ import annotations

import signal
import subprocess
import sys
import uuid
from pathlib import Path

import pytest
import sqlalchemy as sa

from iterflow.errors import RunNotResumable
from iterflow.store import open_store

PROC = str(Path(__file__).with_name("proc.py"))


def test_four_processes_record_every_event(store_url):
    # All four open the (new) store at once, create the schema between them,
    # and write with small batches so their transactions interleave.
    n = 1000
    run_ids = [uuid.uuid4().hex for _ in range(4)]
    procs = [
        subprocess.Popen([sys.executable, PROC, "write", store_url, run_id, str(n)])
        for run_id in run_ids
    ]
    for proc in procs:
        assert proc.wait(timeout=120) == 0

    with open_store(store_url) as store:
        runs = {r.run_id: r for r in store.list_runs(limit=None)}
        assert set(runs) == set(run_ids)
        assert {r.state for r in runs.values()} == {"Success"}
        for run_id in run_ids:
            history = store.iterations(run_id, "work")
            assert [h.loop_index for h in history] == list(range(n + 1))
            assert [h.state for h in history] == ["Looped"] * n + ["Success"]
            assert store.load_result(history[-2].result_id) == [n - 1] * 10
            assert len(store.logs(run_id)) == len(range(0, n, 100))
            (task_run,) = store.task_runs(run_id)
            assert (task_run.state, task_run.loop_count) == ("Success", n + 1)
        with store.engine.connect() as conn:
            # State ids were handed out in blocks: none is shared or lost.
            count, distinct = conn.execute(
                sa.text(
                    "SELECT count(*), count(DISTINCT id) FROM state_transitions "
                    "WHERE serializer IS NOT NULL"
                )
            ).one()
        assert count == distinct == 4 * (n + 1)


def test_a_killed_process_is_crashed_and_resumable(store_url):
    run_id = uuid.uuid4().hex
    proc = subprocess.Popen(
        [sys.executable, PROC, "hold", store_url, run_id], stdout=subprocess.PIPE, text=True
    )
    try:
        assert proc.stdout.readline().strip() == "ready"
        with open_store(store_url) as store:
            info = store.get_run(run_id)
            assert (info.state, info.pid) == ("Running", proc.pid)
            with pytest.raises(RunNotResumable, match=f"still running \\(process {proc.pid}"):
                store.check_resumable(run_id)
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)
        proc.stdout.close()

    with open_store(store_url) as store:
        info = store.get_run(run_id)
        assert (info.state, info.recorded_state) == ("Crashed", "Running")
        assert [r.run_id for r in store.list_runs(state="Crashed")] == [run_id]
        assert store.list_runs(state="Running") == []
        store.check_resumable(run_id)
        point = store.resume_point(run_id)
        assert point.loops == {("work-1", None): (3, [2] * 10)}
        assert point.parameters == {"n": 3}

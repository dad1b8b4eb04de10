"""Kill and cancel a run whose batches the store's writer process commits (SQLite).

The same promises as with the writer thread (test_kill_resume, test_cancel):
batches committed within the interval, nothing lost but the last batch on
SIGKILL, a resume that continues at the last recorded iteration, a cancelled
run with its interrupted iteration recorded. And: the run is recorded as
driven by the killed process (so it is Crashed, not live), and the writer
process does not outlive it.
"""

from __future__ import annotations

import os
import signal
import time

import pytest

from iterflow.store import iterations, list_runs

from .helpers import kill, wait_for
from .test_kill_resume import COMMIT_WITHIN, COUNTING, SLACK, started_so_far, watch_commits

N = 3000
# The flow marks its writer process's pid once it has taken over.
WITH_WRITER_PID = COUNTING.replace(
    '    mark("started", i, repr(time.time()))',
    '    mark("started", i, repr(time.time()))\n'
    '    if i == 20:\n'
    '        from iterflow.store import writer_process\n'
    '        mark("writer", writer_process.writer_process(start=False)._popen.pid)',
)


def _gone(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as fh:
            return fh.read().rsplit(")", 1)[1].split()[0] == "Z"
    except FileNotFoundError:
        return True


@pytest.fixture
def sqlite_only(home):
    """The default store: the writer process writes SQLite files only."""
    return f"sqlite:///{home / 'iterflow.db'}"


def test_sigkill_with_the_writer_process_then_resume(flow_script, sqlite_only):
    script = flow_script(WITH_WRITER_PID, sqlite_only)
    proc = script.start("run", f"{{'n': {N}}}", DELAY="0.002", ITERFLOW_WRITER="process")
    lag = watch_commits(script, proc, sqlite_only, min_iterations=150, seconds=0.6)
    assert lag <= COMMIT_WITHIN + SLACK, f"an iteration was recorded {lag:.3f} s late"
    (writer,) = script.side("writer")
    writer_pid = int(writer[0])
    assert writer_pid != proc.pid
    assert kill(proc) == -9
    wait_for(lambda: _gone(writer_pid), "the writer process to end with its parent")
    first = [i for i, _ in started_so_far(script)]
    assert first == list(range(len(first))) and first[-1] < N - 1

    (run,) = list_runs(store=sqlite_only)
    # Recorded as driven by the killed process, not by its writer: so it is Crashed.
    assert (run.state, run.recorded_state, run.pid) == ("Crashed", "Running", proc.pid)
    out = script.run("resume", run.run_id, DELAY="0", ITERFLOW_WRITER="process")
    assert out["state"] == "Success"
    assert out["results"]["count"] == N * (N - 1) // 2
    second = [int(i) for i, _ in script.side("started")[len(first):]]
    assert second == list(range(second[0], N))
    assert 0 < second[0] <= first[-1] + 1
    looped = [h.loop_index for h in iterations(run.run_id, "count", store=sqlite_only)
              if h.state == "Looped"]
    assert set(looped) == set(range(N - 1))


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_a_signal_cancels_a_run_written_by_the_writer_process(flow_script, sqlite_only, signum):
    script = flow_script(WITH_WRITER_PID, sqlite_only)
    proc = script.start("run", f"{{'n': {N}}}", DELAY="0.002", ITERFLOW_WRITER="process")
    wait_for(lambda: len(script.side("started")) >= 60, "60 iterations", proc=proc, script=script)
    (writer,) = script.side("writer")
    # A Ctrl-C at a terminal goes to the whole foreground process group: the
    # writer, in a session of its own, does not get it and lose the last batch.
    assert os.getsid(int(writer[0])) == int(writer[0]) != os.getsid(proc.pid)
    code = kill(proc, signum)
    assert code != 0
    first = [int(i) for i, _ in script.side("started")]
    (run,) = list_runs(store=sqlite_only)
    assert run.state == "Cancelled", (run, script.output(proc)[1][-2000:])
    looped = [h.loop_index for h in iterations(run.run_id, "count", store=sqlite_only)
              if h.state == "Looped"]
    # Everything up to the interrupted iteration was committed before the run ended.
    assert looped == list(range(len(looped))) and len(looped) >= first[-1] - 1
    deadline = time.monotonic() + 30
    while not _gone(int(writer[0])) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert _gone(int(writer[0])), "the writer process outlived the cancelled run's process"

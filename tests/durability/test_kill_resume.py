"""A run killed with SIGKILL mid-loop, resumed from a fresh process (DESIGN §7.10, §8).

The loop writes each iteration it starts to a side file (fsync'ed), so the
test knows exactly which iterations ran in which process: none may be lost,
none skipped, the resumed process must not start again from 0, and the
iterations that run twice are bounded — by the batching interval (committed at
least every 0.1 s), or to one with ``checkpoint="every"``. A mapped flow
stopped mid-child shows what a resume keeps: finished tasks and children are
not run again, the stopped child continues where it was, the parameters are
the original ones; a live run and a successful run are refused.
"""

from __future__ import annotations

import itertools
import re
import time

import pytest

from iterflow.errors import RunNotResumable, StoreError
from iterflow.store import iterations, list_runs, open_store, task_runs

from .helpers import kill, wait_for

COUNTING = """
@task(checkpoint=os.environ.get("CHECKPOINT") or None)
def count(n):
    i = iterflow.context.loop_index
    mark("started", i, repr(time.time()))
    time.sleep(float(os.environ.get("DELAY", "0")))
    total = iterflow.context.get("loop_result", 0) + i
    if i < n - 1:
        raise LOOP(result=total)
    return total


with Flow("counting") as flow:
    count(Parameter("n"))
"""

N = 600
DELAY = 0.004  # per iteration, in the process that gets killed
# DESIGN §7.10: batched records are committed at least every 0.1 s. SLACK
# allows for a loaded machine.
COMMIT_WITHIN = 0.1
SLACK = 0.15


def started_so_far(script) -> list[tuple[int, float]]:
    """``(loop_index, time)`` of each iteration the side file says started."""
    return [(int(i), float(t)) for i, t in script.side("started")]


def watch_commits(script, proc, store_url: str, min_iterations: int, seconds: float) -> float:
    """While the loop runs, how far the store lags behind it: the worst lag seen (s).

    The lag at a moment is how long ago the oldest iteration that is not
    recorded ended (raised LOOP; that is when the next one started). Watches
    until ``min_iterations`` have started and ``seconds`` have passed.
    """
    # The run is recorded before any task runs: once one has, the store exists.
    wait_for(lambda: script.side("started"), "the loop to start", proc=proc, script=script)
    (run,) = list_runs(store=store_url)
    worst = 0.0
    with open_store(store_url) as store:
        while True:
            assert proc.poll() is None, script.output(proc)[1][-3000:]
            now = time.time()
            started = started_so_far(script)
            # Read the store after the side file: it can only be further on.
            count = {t.task_name: t for t in store.task_runs(run.run_id)}.get("count")
            recorded = -1 if count is None or count.loop_count is None else count.loop_count - 1
            if recorded + 2 < len(started):  # iteration recorded + 1 has ended
                worst = max(worst, now - started[recorded + 2][1])
            if len(started) >= min_iterations and now - started[0][1] >= seconds:
                return worst
            time.sleep(0.02)


@pytest.mark.parametrize("checkpoint", ["batched", "every"])
def test_sigkill_mid_loop_then_resume_from_a_fresh_process(flow_script, store_url, checkpoint):
    script = flow_script(COUNTING, store_url)
    proc = script.start("run", f"{{'n': {N}}}", CHECKPOINT=checkpoint, DELAY=str(DELAY))
    lag = watch_commits(script, proc, store_url, min_iterations=150, seconds=0.6)
    if checkpoint == "every":
        # Each Looped state is committed before the next iteration starts.
        assert lag == 0, f"an iteration ended {lag:.3f} s before it was recorded"
    else:
        assert lag <= COMMIT_WITHIN + SLACK, f"an iteration was recorded {lag:.3f} s late"
    killed_at = time.time()
    assert kill(proc) == -9
    first = started_so_far(script)
    ran_first = [i for i, _ in first]
    assert ran_first == list(range(len(first))), "the first process skipped an iteration"
    last = ran_first[-1]
    assert last < N - 1, "the loop finished before it was killed: nothing to resume"

    (run,) = list_runs(store=store_url)
    assert (run.state, run.recorded_state, run.pid) == ("Crashed", "Running", proc.pid)
    assert [r.run_id for r in list_runs(state="Crashed", store=store_url)] == [run.run_id]

    out = script.run("resume", run.run_id, CHECKPOINT=checkpoint, DELAY="0")
    assert out == {
        "run_id": run.run_id,
        "state": "Success",
        "results": {"n": N, "count": N * (N - 1) // 2},  # every loop_result was right
    }

    ran_second = [int(i) for i, _ in script.side("started")[len(first) :]]
    start = ran_second[0]
    assert ran_second == list(range(start, N)), "the resumed loop is not 0..n-1 in order"
    assert start > 0, "the resumed run started again from iteration 0"
    assert start <= last + 1, f"iterations {last + 1}..{start - 1} were never run"
    repeats = last + 1 - start
    if checkpoint == "every":
        assert repeats <= 1, f"{repeats} iterations ran twice with checkpoint='every'"
    else:
        # Iteration i ended (LOOP raised) when i + 1 started; those that ended
        # long enough before the kill were committed and must not run again.
        must_be_recorded = [
            i
            for (i, _), (_, next_start) in itertools.pairwise(first)
            if next_start < killed_at - COMMIT_WITHIN - SLACK
        ]
        assert start > must_be_recorded[-1], (
            f"iteration {must_be_recorded[-1]} ended more than {COMMIT_WITHIN + SLACK} s "
            f"before the kill but was not recorded: resume started at {start}"
        )

    # The store keeps one run, resumed in place, and every iteration's Looped state.
    runs = list_runs(store=store_url)
    assert [(r.run_id, r.state) for r in runs] == [(run.run_id, "Success")]
    history = iterations(run.run_id, "count", store=store_url)
    looped = [h.loop_index for h in history if h.state == "Looped"]
    assert set(looped) == set(range(N - 1))
    assert len(looped) <= N - 1 + repeats
    assert (history[-1].state, history[-1].loop_index) == ("Success", N - 1)
    counted = {t.task_name: (t.state, t.loop_count) for t in task_runs(run.run_id, store=store_url)}
    assert counted == {"n": ("Success", 1), "count": ("Success", N)}


MAPPED = """
@task
def prepare(n):
    mark("prepare", n)
    return list(range(n))


@task
def grow(x, loops):
    i = iterflow.context.loop_index
    mark("grow", x, i)
    if x == 2 and i == 3 and os.environ.get("STOP_MID_LOOP"):
        wait_here("stopped")
    total = iterflow.context.get("loop_result", 0) + x
    if i < loops - 1:
        raise LOOP(result=total)
    return total


@task
def report(values, tag):
    given = iterflow.context.parameters["tag"]
    mark("report", type(tag).__name__, repr(tag).replace(" ", ""), repr(given).replace(" ", ""))
    return sum(values)


with Flow("mapped") as flow:
    loops = Parameter("loops")
    grown = grow.map(prepare(Parameter("n")), unmapped(loops))
    report(grown, Parameter("tag", default="no tag"))
"""


def test_resume_reruns_nothing_finished_and_continues_each_child(flow_script, store_url):
    # prepare() finishes, children 0 and 1 finish their loops, child 2 stops in
    # iteration 3, child 3 never starts. The process is then SIGKILLed.
    script = flow_script(MAPPED, store_url)
    proc = script.start("run", "{'n': 4, 'loops': 6, 'tag': (1, 'a')}", STOP_MID_LOOP="1")
    wait_for(lambda: script.side("stopped"), "child 2 to stop mid-loop", proc=proc, script=script)
    (run,) = list_runs(store=store_url)

    def child_2_recorded() -> bool:
        try:
            history = iterations(run.run_id, "grow", map_index=2, store=store_url)
        except StoreError:  # its task run is not committed yet
            return False
        return [h.loop_index for h in history if h.state == "Looped"] == [0, 1, 2]

    wait_for(child_2_recorded, "child 2's iterations 0..2 to be recorded", proc=proc)

    # While its process is alive the run cannot be resumed, and trying changes nothing.
    flow = script.load()["flow"]
    assert list_runs(store=store_url)[0].state == "Running"
    with pytest.raises(RunNotResumable) as refused:
        flow.run(resume=run.run_id, store=store_url)
    message = str(refused.value)
    assert run.run_id in message and "still running" in message
    assert f"process {proc.pid}" in message
    assert "two processes must not drive one run" in message
    after = list_runs(store=store_url)[0]
    assert (after.state, after.pid) == ("Running", proc.pid)
    assert script.side("prepare") == [["4"]], "the refused resume ran a task"

    kill(proc)
    assert list_runs(store=store_url)[0].state == "Crashed"
    marks_before = len(script.side("grow"))

    out = script.run("resume", run.run_id[:10])  # a unique prefix names the run
    assert out == {
        "run_id": run.run_id,
        "state": "Success",
        "results": {
            "n": 4,
            "loops": 6,
            "tag": [1, "a"],
            "prepare": [0, 1, 2, 3],
            "grow": [0, 6, 12, 18],
            "report": 36,
        },
    }
    # Finished task runs were not run again: their results came from the store.
    assert script.side("prepare") == [["4"]]
    grow_marks = [(int(x), int(i)) for x, i in script.side("grow")]
    assert grow_marks[:marks_before] == [
        *[(0, i) for i in range(6)],
        *[(1, i) for i in range(6)],
        *[(2, i) for i in range(4)],
    ]
    # Child 2 continued at the iteration it was in; child 3 started from 0.
    assert grow_marks[marks_before:] == [(2, 3), (2, 4), (2, 5), *[(3, i) for i in range(6)]]
    # The parameters came from the original run, the tuple included.
    assert script.side("report") == [["tuple", "(1,'a')", "(1,'a')"]]

    for index in range(4):
        history = iterations(run.run_id, "grow", map_index=index, store=store_url)
        assert [h.loop_index for h in history if h.state == "Looped"] == [0, 1, 2, 3, 4]
        assert (history[-1].state, history[-1].loop_index) == ("Success", 5)
    assert [(r.run_id, r.state) for r in list_runs(store=store_url)] == [(run.run_id, "Success")]

    # A successful run is not resumed again.
    with pytest.raises(RunNotResumable, match=re.escape(run.run_id) + ".*finished successfully"):
        flow.run(resume=run.run_id, store=store_url)
    assert script.side("prepare") == [["4"]]
    assert len(script.side("grow")) == len(grow_marks)

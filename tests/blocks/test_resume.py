"""Resuming loop blocks: at the first unfinished iteration, without re-running its finished tasks.

The engine side is driven with hand-made :class:`ResumePoint` values (what a
store returns); the last test kills a real run with SIGKILL in the middle of
an iteration and resumes it from the SQLite store.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

import iterflow
from iterflow import Flow, loop, task
from iterflow.core.state import Success
from iterflow.engine.runner import FlowRunner
from iterflow.events import EventBus, IterationResume, ResumePoint, TaskRunEvent
from tests.blocks.conftest import BlockSink


@task
def fetch(total, i):
    return total + i


@task
def transform(x):
    return 2 * x


@task
def decide(i):
    return i >= 5


def pipeline(name="pages"):
    with Flow("resumable") as flow, loop(initial=0, name=name) as it:
        f = fetch(it.result, it.index)
        t = transform(f)
        it.next(result=t, until=decide(it.index))
    return flow, it, f, t


def resume_with(flow, point: ResumePoint, executor=None) -> tuple[iterflow.states.State, BlockSink]:
    from iterflow.executors import LocalExecutor

    sink = BlockSink()
    runner = FlowRunner(flow, executor or LocalExecutor(), bus=EventBus([sink]), resume=point)
    state = runner.run()
    sink.assert_ok()
    return state, sink


def ran(sink: BlockSink, slug: str) -> list[str]:
    """The ids of the task runs of ``slug`` that ran (went Running) in this run."""
    return [
        e.task_run_id for e in sink.events
        if isinstance(e, TaskRunEvent) and e.task_slug == slug and e.state.is_running()
    ]


def expected_final() -> int:
    value = 0
    for i in range(6):
        value = 2 * (value + i)
    return value


@pytest.mark.parametrize("name", ["local", "threads"])
def test_a_block_resumes_at_its_first_unfinished_iteration(name):
    from tests.blocks.conftest import make_executor

    flow, it, f, t = pipeline()
    carried = 2 * (2 * (2 * 0 + 1) + 2)   # after iterations 0, 1, 2
    point = ResumePoint(
        run_id="r1",
        loops={("pages", None): (3, carried)},
        # iteration 3 had fetched before the run stopped
        iterations={
            "r1/pages/3": IterationResume(finished={(f.slug, None): Success(result=carried + 3)}),
        },
    )
    state, sink = resume_with(flow, point, make_executor(name))
    assert state.is_successful()
    assert state.result[it.final].result == expected_final()
    assert state.result[it.final].loop_count == 6
    assert ran(sink, f.slug) == ["r1/pages/4/fetch", "r1/pages/5/fetch"]
    assert ran(sink, t.slug) == [f"r1/pages/{k}/transform" for k in (3, 4, 5)]
    assert sink.states("pages") == [
        "Running", "Looped(3)", "Running", "Looped(4)", "Running", "Success",
    ]


def test_a_finished_block_is_not_run_again():
    flow, it, f, _ = pipeline()
    point = ResumePoint(run_id="r1", finished={("pages", None): Success(result=7, loop_count=6)})
    state, sink = resume_with(flow, point)
    assert state.result[it.final].result == 7
    assert ran(sink, f.slug) == [] and ran(sink, "pages") == []


def test_a_task_looping_inside_the_resumed_iteration_continues_its_own_loop():
    @task
    def count_to(n):
        so_far = iterflow.context.get("loop_result", 0)
        if iterflow.context.loop_index < n:
            raise iterflow.LOOP(result=so_far + 1)
        return so_far

    with Flow("inner loop") as flow, loop(initial=0, name="outer") as it:
        c = count_to(3)
        total = fetch(it.result, c)
        it.next(result=total, until=decide(it.index))
    point = ResumePoint(
        run_id="r1",
        loops={("outer", None): (5, 100)},
        iterations={"r1/outer/5": IterationResume(loops={(c.slug, None): (2, 2)})},
    )
    state, sink = resume_with(flow, point)
    assert state.result[it.final].result == 103
    assert sink.states(c.slug) == ["Running", "Looped(2)", "Running", "Success"]


def test_nested_blocks_resume_at_both_levels():
    with Flow("grid") as flow, loop(initial=0, name="rows") as rows:
        with loop(initial=0, name="cols") as cols:
            cell = fetch(cols.result, 1)
            cols.next(result=cell, until=decide(cols.index))    # 6 columns: 6
        total = fetch(rows.result, cols.final)
        rows.next(result=total, until=decide(rows.index))       # 6 rows: 36
    point = ResumePoint(
        run_id="r1",
        loops={("rows", None): (2, 12)},
        iterations={
            "r1/rows/2": IterationResume(loops={("cols", None): (4, 4)}),
            "r1/rows/2/cols/4": IterationResume(finished={(cell.slug, None): Success(result=5)}),
        },
    )
    state, sink = resume_with(flow, point)
    assert state.result[rows.final].result == 36
    first_cells = [i for i in ran(sink, cell.slug) if i.startswith("r1/rows/2/")]
    assert first_cells == ["r1/rows/2/cols/5/fetch"]
    assert len(ran(sink, cell.slug)) == 1 + 3 * 6


def test_a_retried_iteration_resumes_at_its_latest_attempt():
    seen_attempts = []

    @task
    def attempt(x):
        seen_attempts.append(iterflow.context.block_run_count)
        return x + 1

    with Flow("attempts") as flow, loop(initial=0, max_retries=3, name="tries") as it:
        a = attempt(it.result)
        it.next(result=a, until=decide(it.index))
    point = ResumePoint(
        run_id="r1",
        loops={("tries", None): (5, 5)},
        iterations={"r1/tries/5": IterationResume(), "r1/tries/5/attempt2": IterationResume()},
    )
    state, sink = resume_with(flow, point)
    assert state.result[it.final].result == 6
    assert seen_attempts == [2]
    assert ran(sink, a.slug) == ["r1/tries/5/attempt2/attempt"]


# -- a real crash -------------------------------------------------------------------------
KILLABLE = textwrap.dedent('''
    import json, os, sys, time
    from iterflow import Flow, loop, task

    MARKS = os.environ["MARKS"]

    def mark(what):
        with open(os.path.join(MARKS, f"{what}-{os.getpid()}"), "w"):
            pass

    @task(checkpoint="every")
    def fetch(total, i):
        mark(f"fetch-{i}")
        return total + i

    @task(checkpoint="every")
    def transform(x, i):
        mark(f"transform-{i}")
        return 2 * x

    @task(checkpoint="every")
    def save(x, i):
        mark(f"save-{i}")
        if i == 3 and not os.path.exists(os.path.join(MARKS, "killed")):
            open(os.path.join(MARKS, "ready"), "w").close()
            time.sleep(120)   # killed here, in the middle of iteration 3
        return x

    @task
    def decide(i):
        return i >= 5

    with Flow("killable") as flow:
        with loop(initial=0, checkpoint="every", name="pages") as it:
            f = fetch(it.result, it.index)
            t = transform(f, it.index)
            s = save(t, it.index)
            it.next(result=s, until=decide(it.index))

    if __name__ == "__main__":
        if sys.argv[1:] == ["resume"]:
            from iterflow.store import open_store
            run_id = open_store().list_runs()[0].run_id
            state = flow.run(resume=run_id)
        else:
            state = flow.run()
        print(json.dumps({"run_id": state.run_id, "state": state.name,
                          "final": state.result[it.final].result}))
''')


@pytest.mark.skipif(not hasattr(signal, "SIGKILL"), reason="needs SIGKILL")
def test_resume_after_sigkill_in_the_middle_of_an_iteration(tmp_path: Path):
    script = tmp_path / "killable.py"
    script.write_text(KILLABLE)
    marks = tmp_path / "marks"
    marks.mkdir()
    env = {**os.environ, "ITERFLOW_HOME": str(tmp_path / "home"), "MARKS": str(marks)}
    env.pop("ITERFLOW_STORE_URL", None)
    victim = subprocess.Popen([sys.executable, str(script)], env=env, cwd=tmp_path)
    deadline = time.monotonic() + 60
    while not (marks / "ready").exists():
        assert victim.poll() is None, "the run ended before it reached iteration 3"
        assert time.monotonic() < deadline, "the run never reached iteration 3"
        time.sleep(0.02)
    victim.send_signal(signal.SIGKILL)
    victim.wait(timeout=30)
    (marks / "killed").touch()

    out = subprocess.run(
        [sys.executable, str(script), "resume"], env=env, cwd=tmp_path,
        capture_output=True, text=True, timeout=120,
    )
    assert out.returncode == 0, out.stderr
    result = json.loads(out.stdout.strip().splitlines()[-1])
    assert result["state"] == "Success"
    assert result["final"] == expected_final()

    def pids(what):
        return {p.name.rsplit("-", 1)[1] for p in marks.glob(f"{what}-*")}

    first, second = str(victim.pid), pids("fetch-5").pop()
    for i in range(3):                      # finished iterations: not run again
        for what in ("fetch", "transform", "save"):
            assert pids(f"{what}-{i}") == {first}, (what, i)
    assert pids("fetch-3") == {first}       # finished within the killed iteration
    assert pids("transform-3") == {first}
    assert pids("save-3") == {first, second}  # the task that was running: run again
    for i in (4, 5):
        assert pids(f"fetch-{i}") == {second}


def test_a_failed_block_resumes_from_the_store_where_it_failed(tmp_path: Path):
    from iterflow.runtime import run_flow

    broken = {"at": 2}
    calls: list[tuple[str, int]] = []

    @task
    def step(total, i):
        calls.append(("step", i))
        return total + i

    @task
    def check(x, i):
        calls.append(("check", i))
        if i == broken["at"]:
            raise RuntimeError("disk full")
        return x

    with Flow("fails then resumes") as flow, loop(initial=0, name="work") as it:
        s = step(it.result, it.index)
        c = check(s, it.index)
        it.next(result=c, until=decide(it.index))

    url = f"sqlite:///{tmp_path / 'runs.db'}"
    first = run_flow(flow, store=url)
    assert first.is_failed() and first.result[it.final].loop_count == 3
    broken["at"] = None
    calls.clear()
    second = run_flow(flow, store=url, resume=first.run_id)
    assert second.is_successful() and second.run_id == first.run_id
    assert second.result[it.final].result == sum(range(6))
    # iteration 2's step had succeeded: only its check runs again, then 3, 4, 5
    assert calls == [("check", 2)] + [(name, i) for i in (3, 4, 5) for name in ("step", "check")]


def test_a_run_that_failed_in_a_retry_resumes_from_the_store_at_that_attempt(tmp_path: Path):
    from iterflow.runtime import run_flow
    from iterflow.store import task_runs

    failing = {(2, 1), (2, 2)}  # (iteration, attempt) at which check fails
    calls: list[tuple[str, int, int]] = []

    @task
    def step(total, i):
        calls.append(("step", i, iterflow.context.block_run_count))
        return total + i

    @task
    def check(x, i):
        calls.append(("check", i, iterflow.context.block_run_count))
        if (i, iterflow.context.block_run_count) in failing:
            raise RuntimeError("flaky")
        return x

    with Flow("retried then resumed") as flow, loop(initial=0, max_retries=1, name="work") as it:
        s = step(it.result, it.index)
        c = check(s, it.index)
        it.next(result=c, until=decide(it.index))

    url = f"sqlite:///{tmp_path / 'runs.db'}"
    first = run_flow(flow, store=url)
    assert first.is_failed()
    assert calls[-4:] == [("step", 2, 1), ("check", 2, 1), ("step", 2, 2), ("check", 2, 2)]
    recorded = {t.task_run_id for t in task_runs(first.run_id, store=url)}
    assert f"{first.run_id}/work/2/attempt2/step" in recorded
    failing.clear()
    calls.clear()
    second = run_flow(flow, store=url, resume=first.run_id)
    assert second.is_successful(), second
    assert second.result[it.final].result == sum(range(6))
    # Attempt 2 of iteration 2 goes on (its step had finished); not attempt 1 again.
    assert calls == [("check", 2, 2)] + [
        (name, i, 1) for i in (3, 4, 5) for name in ("step", "check")
    ]


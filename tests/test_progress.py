"""The progress display: plain lines, the live table, thread safety, and its hot-path cost."""

from __future__ import annotations

import io
import re
import threading
import time

import pytest
from rich.console import Console

import iterflow
from iterflow import LOOP, Flow, Parameter, task
from iterflow.core.state import Kind, Looped, Running, Success
from iterflow.events import FlowRunEvent, TaskRunEvent
from iterflow.executors import ThreadExecutor
from iterflow.progress import ProgressDisplay, format_duration
from iterflow.runtime import run_flow


def _plain_console() -> Console:
    return Console(file=io.StringIO(), width=120, color_system=None)


def _terminal_console() -> Console:
    return Console(file=io.StringIO(), width=120, force_terminal=True, color_system=None)


def _text(console: Console) -> str:
    return console.file.getvalue()


@task
def count_to(n):
    if iterflow.context.loop_index < n:
        raise LOOP(result=iterflow.context.loop_index)
    return n


@task
def fails():
    raise ValueError("no good")


@task
def double(x):
    if x == 3:
        raise ValueError("three")
    return 2 * x


def _loop_flow(n: int = 50) -> Flow:
    with Flow("counting") as flow:
        limit = Parameter("limit", default=n)
        count_to(limit)
    return flow


# -- plain output ----------------------------------------------------------------------
def test_plain_output_has_one_line_per_task_not_per_iteration():
    console = _plain_console()
    flow = _loop_flow(50)
    run_flow(flow, store=None, sinks=[ProgressDisplay.for_flow(flow, console=console)])
    lines = _text(console).splitlines()
    assert lines[0].startswith("Running flow 'counting' (run ") and lines[0].endswith(", 1 task)")
    assert len(lines) == 3, lines  # start, the task, the end: no line per iteration
    assert "count_to Success (51 iterations" in lines[1]
    assert lines[2].startswith("Flow 'counting' finished Success in ")
    assert lines[2].endswith("(1/1 tasks)")  # the parameter is neither shown nor counted


def test_plain_output_names_failures_and_mapped_children():
    with Flow("mixed") as flow:
        fails()
        double.map([1, 2, 3])
    console = _plain_console()
    state = run_flow(flow, store=None, sinks=[ProgressDisplay.for_flow(flow, console=console)])
    assert state.is_failed()
    out = _text(console)
    assert "fails Failed" in out and "ValueError: no good" in out
    assert "double[2] Failed" in out and "ValueError: three" in out  # a failed child: a line
    assert "double[0]" not in out  # a child that succeeded: no line of its own
    assert "double Mapped (3 children)" in out
    assert "finished Failed" in out and "failed" in out.splitlines()[-1]


def test_quiet_or_not_a_terminal_means_plain():
    flow = _loop_flow()
    assert ProgressDisplay.for_flow(flow, console=_plain_console()).live is False
    assert ProgressDisplay.for_flow(flow, console=_terminal_console()).live is True
    assert ProgressDisplay.for_flow(flow, console=_terminal_console(), quiet=True).live is False


def test_a_resumed_run_counts_the_tasks_it_does_not_run_again():
    console = _plain_console()
    display = ProgressDisplay(total_tasks=3, console=console, live=False, hidden_slugs={"n"})
    display.handle(
        FlowRunEvent("r1", "f", Running(), resumed=True, finished=("a", "b", "n"))
    )
    display.handle(FlowRunEvent("r1", "f", Success("done")))
    display.close()
    first, last = _text(console).splitlines()
    assert first == "Resuming flow 'f' (run r1, 3 tasks, 2 already finished)"
    assert last.endswith("(2/3 tasks)")


# -- the live display ---------------------------------------------------------------------
@task
def slow_count(n):
    time.sleep(0.002)
    if iterflow.context.loop_index < n:
        raise LOOP()
    return n


def test_live_display_shows_the_current_iteration_and_rate():
    with Flow("slow") as flow:
        slow_count(250)  # about half a second at 20 redraws a second
    console = _terminal_console()
    display = ProgressDisplay(
        total_tasks=1, console=console, refresh_per_second=20
    )
    run_flow(flow, store=None, sinks=[display])
    out = _text(console)
    assert "0/1 tasks finished, 1 running" in out
    assert "iteration" in out and " it/s" in out
    frames = [line for line in out.splitlines() if line.lstrip().startswith("slow_count ")]
    iterations = [int(line.split()[2]) for line in frames if line.split()[1] == "Running"
                  and line.split()[2].isdigit()]
    assert iterations and iterations == sorted(iterations) and iterations[-1] > 0
    assert "slow_count Success (251 iterations" in out


def test_live_display_survives_many_threads():
    # Mapped looping children on 8 threads all call handle() at once while the
    # refresh thread draws; every count must come out right.
    @task
    def spin(x):
        if iterflow.context.loop_index < 300:
            raise LOOP()
        return x

    with Flow("threads") as flow:
        spin.map(list(range(24)))
    console = _terminal_console()
    display = ProgressDisplay.for_flow(flow, console=console)
    display.refresh_per_second = 50
    state = run_flow(flow, executor=ThreadExecutor(8), store=None, sinks=[display])
    assert state.is_successful()
    assert display._children_finished == 24 and display._running == {}
    assert "spin Mapped (24 children)" in _text(console)


def test_close_is_safe_before_start_and_twice():
    display = ProgressDisplay(total_tasks=1, console=_terminal_console())
    display.close()
    display.close()


# -- cost ---------------------------------------------------------------------------------------
def test_loop_events_update_the_running_view_in_place():
    """Each iteration's events only move the task run's view (its cost is in benchmarks/)."""
    display = ProgressDisplay(total_tasks=1, console=_terminal_console(), live=False)
    display.handle(FlowRunEvent("r", "f", Running()))
    display.handle(TaskRunEvent("r", "r/t", "t", "t", None, 0, Running(loop_index=0)))
    view = display._running["r/t"]
    display.handle(TaskRunEvent("r", "r/t", "t", "t", None, 0, Looped(loop_index=0)))
    # A Looped stands for the next iteration's start: its Running may never come.
    assert (view.loop_index, view.kind) == (1, Kind.RUNNING)
    for i in range(1, 10):
        display.handle(TaskRunEvent("r", "r/t", "t", "t", None, i, Running(loop_index=i)))
        assert (view.loop_index, view.kind) == (i, Kind.RUNNING)
        display.handle(TaskRunEvent("r", "r/t", "t", "t", None, i, Looped(loop_index=i)))
    assert display._running["r/t"] is view
    assert (view.loop_index, view.kind) == (10, Kind.RUNNING)


def test_handle_from_threads_keeps_counts():
    display = ProgressDisplay(total_tasks=None, console=_plain_console(), live=False)
    display.handle(FlowRunEvent("r", "f", Running()))

    def worker(k: int) -> None:
        task_run = f"r/t/{k}"
        for i in range(200):
            display.handle(TaskRunEvent("r", task_run, "t", "t", k, i, Running(loop_index=i)))
        display.handle(TaskRunEvent("r", task_run, "t", "t", k, 199, Success(loop_count=200)))

    threads = [threading.Thread(target=worker, args=(k,)) for k in range(16)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert display._children_finished == 16 and display._running == {}


@pytest.mark.parametrize(
    ("seconds", "text"),
    [(None, ""), (0.123, "0.12 s"), (12.34, "12.3 s"), (125, "2m05s"), (7300, "2h01m")],
)
def test_format_duration(seconds, text):
    assert format_duration(seconds) == text


def test_a_loop_block_counts_each_task_once():
    from iterflow import loop

    @task
    def step(carried):
        return carried + 1

    @task
    def done(value):
        return value >= 3

    @task
    def report(value):
        return value

    with Flow("block progress") as flow:
        with loop(initial=0, max_loops=10) as it:
            value = step(it.result)
            it.next(result=value, until=done(value))
        report(it.final)
    console = _plain_console()
    state = run_flow(flow, store=None, sinks=[ProgressDisplay.for_flow(flow, console=console)])
    assert state.is_successful()
    # step, done, the block and report: it.result is supplied by the engine, not counted.
    assert "(4/4 tasks)" in _text(console)


def test_resuming_from_python_with_progress_counts_what_finished_before(tmp_path, capsys):
    from iterflow import Flow, task
    from iterflow.runtime import run_flow

    broken = {"now": True}

    @task
    def first():
        return 1

    @task
    def second(x):
        if broken["now"]:
            raise RuntimeError("not yet")
        return x + 1

    with Flow("resumed with progress") as flow:
        second(first())
    url = f"sqlite:///{tmp_path / 'store.db'}"
    failed = run_flow(flow, store=url)
    assert failed.is_failed()
    broken["now"] = False
    capsys.readouterr()
    resumed = run_flow(flow, store=url, resume=failed.run_id, progress=True)
    assert resumed.is_successful()
    out = capsys.readouterr().out
    assert f"Resuming flow 'resumed with progress' (run {failed.run_id[:8]}, 2 tasks, " \
        "1 already finished)" in out
    assert "(2/2 tasks)" in out



# -- task run names ---------------------------------------------------------------------
@task(task_run_name="crawl {site}")
def crawl(site):
    time.sleep(0.002)
    if iterflow.context.loop_index < 150:
        raise LOOP()
    if site == "bad.example":
        raise ValueError("gone")
    return site


def test_task_run_names_in_plain_lines_and_the_live_table():
    with Flow("named progress") as flow:
        crawl("example.org")
        crawl.map(["ok.example", "bad.example"])
    console = _plain_console()
    state = run_flow(flow, store=None, sinks=[ProgressDisplay.for_flow(flow, console=console)])
    assert state.is_failed()
    out = _text(console)
    assert "crawl example.org Success (151 iterations" in out
    assert "crawl bad.example[1] Failed" in out and "ValueError: gone" in out
    console = _terminal_console()
    display = ProgressDisplay(total_tasks=2, console=console, refresh_per_second=20)
    run_flow(flow, store=None, sinks=[display])
    frames = [line.strip() for line in _text(console).splitlines()]
    assert any(line.startswith("crawl example.org ") and "Running" in line for line in frames)


@task
def nap():
    iterflow.sleep(0.6)
    return "rested"


def test_live_table_says_until_when_a_task_run_sleeps():
    # iterflow.sleep records its wake-up time; the row shows it instead of "Running".
    with Flow("napping") as flow:
        nap()
    console = _terminal_console()
    display = ProgressDisplay(total_tasks=1, console=console, refresh_per_second=20)
    state = run_flow(flow, store=None, sinks=[display])
    assert state.is_successful()
    rows = [line.strip() for line in _text(console).splitlines() if line.strip().startswith("nap ")]
    sleeping = [line for line in rows if "sleeping until " in line]
    assert sleeping, rows
    shown = sleeping[0].split("sleeping until ")[1].split()[0]
    assert time.strptime(shown, "%H:%M:%S")  # a clock time, HH:MM:SS


@task
def page_through(n):
    time.sleep(0.002)
    i = iterflow.context.loop_index
    if i < n:
        raise LOOP(result=i, label=f"page {i} (cursor=c{i})")
    return n


@pytest.mark.parametrize("with_store", [False, True])
def test_live_table_shows_the_last_iteration_label(tmp_path, with_store):
    # With the store on, iterations reach the display through the loop lane.
    with Flow("paging") as flow:
        page_through(200)
    console = _terminal_console()
    display = ProgressDisplay(total_tasks=1, console=console, refresh_per_second=20)
    store = f"sqlite:///{tmp_path}/p.db" if with_store else None
    run_flow(flow, store=store, sinks=[display])
    frames = [line for line in _text(console).splitlines()
              if line.lstrip().startswith("page_through ") and "Running" in line]
    labels = [int(m.group(1)) for m in map(re.compile(r"page (\d+) \(cursor=c\1\)").search,
                                           frames) if m]
    assert "last label" in _text(console)
    assert labels and labels == sorted(labels)
    # The label shown is that of an iteration before the one running.
    for line in frames:
        found = re.search(r"Running\s+(\d+)\s.*page (\d+) ", line)
        if found:
            assert int(found.group(2)) < int(found.group(1))

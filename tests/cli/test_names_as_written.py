"""Names are shown as written: a user's string goes to the terminal as text, never markup.

Flow, task and parameter names (and log messages) with brackets, backslashes
and rich's own ``[bold]`` tags must come out character for character, in the
progress display, ``runs``, ``show``, ``show --iterations``, ``logs`` and the
errors of a failed run.
"""

from __future__ import annotations

import io
import json
import time

from rich.console import Console

import iterflow
from iterflow import LOOP, Flow, task
from iterflow.progress import ProgressDisplay
from iterflow.runtime import run_flow
from tests.cli.helpers import needs_store

FLOW_NAME = "etl [prod] [bold]x\\"
SPLIT = "split [/] join"
LOUD = "[bold]loud\\"
PARAM = "[bold]rate\\"

NAMES = f"""
    import iterflow
    from iterflow import task, Flow, Parameter, LOOP

    @task(name={SPLIT!r})
    def split(x):
        i = iterflow.context.loop_index
        iterflow.context.logger.info("step [bold]%s[/bold] \\\\ [red]", i)
        if i < 2:
            raise LOOP(result=i)
        return x

    @task(name={LOUD!r})
    def loud(x):
        raise ValueError("[red]bad[/red] \\\\ input")

    with Flow({FLOW_NAME!r}) as flow:
        p = Parameter({PARAM!r}, default="[i]v[/i]")
        loud(split(p))
"""


@needs_store
def test_names_with_brackets_and_backslashes_show_as_written(cli, flow_file):
    path = flow_file("names.py", NAMES)
    ran = cli("run", path)
    assert ran.returncode == 1, ran.stderr
    assert "MarkupError" not in ran.stderr
    assert f"Running flow '{FLOW_NAME}'" in ran.stdout
    assert f"{SPLIT} Success (3 iterations" in ran.stdout
    assert f"{LOUD} Failed" in ran.stdout
    assert f"flow '{FLOW_NAME}' Failed" in ran.stderr
    assert "[red]bad[/red] \\ input" in ran.stderr

    listed = cli("runs")
    assert listed.returncode == 0, listed.stderr
    assert FLOW_NAME in listed.stdout
    [run] = json.loads(cli("runs", "--json").stdout)
    assert run["flow_name"] == FLOW_NAME

    shown = cli("show", run["run_id"])
    assert shown.returncode == 0, shown.stderr
    assert f"of flow '{FLOW_NAME}'" in shown.stdout
    for name in (SPLIT, LOUD, PARAM):
        assert name in shown.stdout, (name, shown.stdout)
    assert "[red]bad[/red] \\ input" in shown.stdout

    history = cli("show", run["run_id"], "--iterations", SPLIT)
    assert history.returncode == 0, history.stderr
    assert f"Iterations of {SPLIT} in run" in history.stdout
    assert "'[i]v[/i]'" in history.stdout

    logs = cli("logs", run["run_id"])
    assert logs.returncode == 0, logs.stderr
    assert f"{SPLIT} #1: step [bold]1[/bold] \\ [red]" in logs.stdout


def _running_rows(out: str) -> list[str]:
    """The live table's rows of the SPLIT task run while it was running."""
    return [line for line in out.splitlines()
            if line.lstrip().startswith(SPLIT + " ") and "Running" in line]


def test_the_live_display_shows_a_running_task_name_as_written():
    console = Console(file=io.StringIO(), width=160, force_terminal=True, color_system=None)

    @task(name=SPLIT)
    def slow(n):
        time.sleep(0.002)
        # At least n iterations, and on until the refresh thread drew the running row:
        # a busy process could hold it off for the whole of a fixed number of them.
        drawn = bool(_running_rows(console.file.getvalue()))
        if iterflow.context.loop_index < n or (not drawn and iterflow.context.loop_index
                                               < 30_000):
            raise LOOP()
        return n

    with Flow(FLOW_NAME) as flow:
        slow(150)
    display = ProgressDisplay(total_tasks=1, console=console, refresh_per_second=20)
    run_flow(flow, store=None, sinks=[display])
    out = console.file.getvalue()
    assert _running_rows(out), out
    assert f"● {FLOW_NAME}" in out

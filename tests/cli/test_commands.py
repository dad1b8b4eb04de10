"""The commands, in-process through click's CliRunner: exit codes, messages, JSON shapes.

The paths that need a second process (resume after a failure, a crash, the
console script itself, a terminal) are in ``test_console_script.py``.
"""

from __future__ import annotations

import json

import pytest

from iterflow.cli.common import EXIT_FAILED, EXIT_USAGE
from tests.cli.helpers import ACCUMULATE, FAILING, needs_store

RUN_KEYS = {"run_id", "flow_name", "state", "started", "ended"}
TASK_RUN_KEYS = {"task_name", "map_index", "state", "loop_count", "started", "ended"}


def _no_traceback(result) -> None:
    assert "Traceback" not in result.output
    assert "Traceback" not in result.stderr


# -- the group ---------------------------------------------------------------------
def test_help_lists_every_command(invoke):
    result = invoke("--help")
    assert result.exit_code == 0
    for command in ("run", "runs", "show", "resume", "logs", "delete"):
        assert f"  {command} " in result.output


def test_version(invoke):
    result = invoke("--version")
    assert result.exit_code == 0 and "iterflow" in result.output


def test_an_unknown_command_is_one_line_and_a_hint(invoke):
    result = invoke("frobnicate")
    assert result.exit_code == EXIT_USAGE
    assert result.stderr.splitlines() == [
        "error: No such command 'frobnicate'.", "hint: see `iterflow --help`"
    ]


def test_an_unknown_option_is_a_usage_error(invoke, flow_file):
    path = flow_file("acc.py", ACCUMULATE)
    result = invoke("run", path, "--frob")
    assert result.exit_code == EXIT_USAGE
    assert result.stderr.startswith("error: No such option")
    assert "iterflow run --help" in result.stderr


# -- run -----------------------------------------------------------------------------
def test_run_succeeds_with_exit_0_and_shows_finished_tasks(invoke, flow_file):
    path = flow_file("acc.py", ACCUMULATE)
    result = invoke("run", path, "--no-store", "-p", "n=3")
    assert result.exit_code == 0, result.output
    out = result.stdout
    assert "Running flow 'looping accumulator'" in out
    assert "accumulate Success (4 iterations" in out
    assert "Flow 'looping accumulator' finished Success" in out
    # Plain output: finished-task lines, not a line per iteration.
    assert out.count("accumulate Success") == 1


def test_task_log_records_show_task_and_loop_index(invoke, flow_file):
    path = flow_file("acc.py", ACCUMULATE)
    result = invoke("run", path, "--no-store", "-p", "n=2")
    assert result.exit_code == 0
    assert "INFO    accumulate #0: partial sum 1" in result.stdout
    assert "INFO    accumulate #1: partial sum 2" in result.stdout
    # log_stdout=True: the task's print() became a log record of that task.
    assert "INFO    report #0: total is 3" in result.stdout


def test_quiet_prints_only_the_outcome(invoke, flow_file):
    path = flow_file("acc.py", ACCUMULATE)
    result = invoke("run", path, "--no-store", "--quiet")
    assert result.exit_code == 0
    lines = result.stdout.splitlines()
    assert len(lines) == 1 and lines[0].startswith("Flow 'looping accumulator' finished Success")


def test_a_failed_run_exits_1_with_one_error_line_naming_the_task(invoke, flow_file):
    path = flow_file("failing.py", FAILING)
    result = invoke("run", path, "--no-store")
    assert result.exit_code == EXIT_FAILED
    error, hint = result.stderr.splitlines()
    assert error.startswith("error: run ") and "of flow 'failing' Failed" in error
    assert "task 'boom'" in error and "ValueError: kaput" in error
    assert hint.startswith("hint: ")
    _no_traceback(result)


def test_debug_shows_the_failed_tasks_tracebacks(invoke, flow_file):
    path = flow_file("failing.py", FAILING)
    result = invoke("run", path, "--no-store", "--debug")
    assert result.exit_code == EXIT_FAILED
    assert "Traceback" in result.stderr and 'raise ValueError("kaput")' in result.stderr


def test_debug_shows_the_traceback_of_an_error(invoke, flow_file):
    path = flow_file("broken.py", "import no_such_module_anywhere\n")
    assert "Traceback" not in invoke("run", path).stderr
    result = invoke("run", path, "--debug")
    assert result.exit_code == EXIT_FAILED
    assert "Traceback" in result.stderr and "ModuleNotFoundError" in result.stderr


def test_an_unknown_parameter_exits_2_naming_the_valid_ones(invoke, flow_file):
    path = flow_file("acc.py", ACCUMULATE)
    result = invoke("run", path, "--no-store", "-p", "m=1")
    assert result.exit_code == EXIT_USAGE
    assert "unknown parameter(s) m" in result.stderr and "its parameters are: n" in result.stderr
    _no_traceback(result)


def test_a_bad_parameter_and_a_bad_executor_exit_2(invoke, flow_file):
    path = flow_file("acc.py", ACCUMULATE)
    assert invoke("run", path, "-p", "n").exit_code == EXIT_USAGE
    result = invoke("run", path, "--executor", "gpu")
    assert result.exit_code == EXIT_USAGE and "is not an executor" in result.stderr


def test_a_missing_file_exits_2(invoke, tmp_path):
    result = invoke("run", tmp_path / "missing.py")
    assert result.exit_code == EXIT_USAGE
    assert result.stderr.startswith("error: no such file:")
    _no_traceback(result)


@pytest.mark.parametrize("executor", ["local", "threads", "threads=2"])
def test_run_on_each_in_process_executor(invoke, flow_file, executor):
    path = flow_file("acc.py", ACCUMULATE)
    result = invoke("run", path, "--no-store", "-q", "--executor", executor)
    assert result.exit_code == 0, result.stderr


# -- runs, show, logs (need the store) ---------------------------------------------------------
def _only_run(invoke) -> dict:
    runs = json.loads(invoke("runs", "--json").stdout)
    assert len(runs) == 1
    return runs[0]


@needs_store
def test_runs_and_show_json_shapes(invoke, flow_file):
    path = flow_file("acc.py", ACCUMULATE)
    assert invoke("run", path, "-p", "n=3", "-q").exit_code == 0
    run = _only_run(invoke)
    assert set(run) >= RUN_KEYS
    assert run["flow_name"] == "looping accumulator" and run["state"] == "Success"
    assert run["source"] == f"{path.resolve()}:flow"

    shown = json.loads(invoke("show", run["run_id"][:6], "--json").stdout)
    assert set(shown) >= RUN_KEYS and shown["run_id"] == run["run_id"]
    by_name = {t["task_name"]: t for t in shown["task_runs"]}
    for task_run in shown["task_runs"]:
        assert set(task_run) >= TASK_RUN_KEYS
    assert by_name["accumulate"]["loop_count"] == 4
    assert by_name["accumulate"]["state"] == "Success"
    assert by_name["accumulate"]["map_index"] is None
    assert by_name["report"]["loop_count"] == 1


@needs_store
def test_show_table_and_iterations(invoke, flow_file):
    path = flow_file("acc.py", ACCUMULATE)
    invoke("run", path, "-p", "n=3", "-q")
    run_id = _only_run(invoke)["run_id"]

    table = invoke("show", run_id)
    assert table.exit_code == 0
    assert f"Run {run_id} of flow 'looping accumulator'" in table.stdout
    assert "accumulate" in table.stdout and "Success" in table.stdout

    history = invoke("show", run_id, "--iterations", "accumulate")
    assert history.exit_code == 0
    assert "Iterations of accumulate" in history.stdout
    rows = json.loads(invoke("show", run_id, "--iterations", "accumulate", "--json").stdout)
    looped = [r for r in rows if r["state"] == "Looped"]
    assert [r["loop_index"] for r in looped] == [0, 1, 2]
    assert [r["preview"] for r in looped] == ["1", "2", "3"]  # the loop results, previewed
    assert rows[-1]["state"] == "Success"


BLOCK = """
import iterflow
from iterflow import Flow, loop, task

@task
def step(total, i):
    return total + i

@task
def done(i):
    return i >= 4

with Flow("block") as flow, loop(initial=0, name="work") as it:
    s = step(it.result, it.index)
    it.next(result=s, until=done(it.index))
"""


@needs_store
def test_show_folds_a_loop_blocks_task_runs_and_lists_them_with_all(invoke, flow_file):
    assert invoke("run", flow_file("block.py", BLOCK), "-q").exit_code == 0
    run_id = _only_run(invoke)["run_id"]

    shown = json.loads(invoke("show", run_id, "--json").stdout)
    steps = [t for t in shown["task_runs"] if t["task_name"] == "step"]
    assert [t["block_index"] for t in steps] == [0, 1, 2, 3, 4]  # JSON keeps every run
    assert {t["block_index"] for t in shown["task_runs"] if t["task_name"] == "work"} == {None}

    def step_rows(output: str) -> list[list[str]]:
        return [line.split() for line in output.splitlines() if line.startswith("step ")]

    table = invoke("show", run_id)
    assert table.exit_code == 0
    (row,) = step_rows(table.stdout)  # one row: the latest of the five runs
    assert row[:4] == ["step", "4/5", "Success", "1"]
    assert "--all lists all" in table.stdout
    every = invoke("show", run_id, "--all")
    assert [row[1] for row in step_rows(every.stdout)] == ["0", "1", "2", "3", "4"]

    history = json.loads(invoke("show", run_id, "--iterations", "step", "--json").stdout)
    assert [(r["block_index"], r["state"], r["preview"]) for r in history] == [
        (0, "Success", "0"), (1, "Success", "1"), (2, "Success", "3"), (3, "Success", "6"),
        (4, "Success", "10"),
    ]
    assert "block  iteration" in invoke("show", run_id, "--iterations", "step").stdout


BIG_MAP = """
from iterflow import Flow, task

@task
def check(x):
    if x in (7, 22):
        raise ValueError(f"bad {x}")
    return x * 2

with Flow("big map") as flow:
    check.map(list(range(30)))
"""


@needs_store
def test_show_folds_a_big_map_into_one_line_and_its_failed_children(invoke, flow_file):
    invoke("run", flow_file("big.py", BIG_MAP), "-q")
    run_id = _only_run(invoke)["run_id"]

    def check_rows(output: str) -> list[list[str]]:
        return [line.split() for line in output.splitlines() if line.startswith("check ")]

    shown = invoke("show", run_id).stdout
    rows = check_rows(shown)
    assert [row[:2] for row in rows] == [["check", "Mapped"], ["check", "7"], ["check", "22"]]
    assert "30 children: 28 Success, 2 Failed" in " ".join(shown.split())  # however wrapped
    assert len(check_rows(invoke("show", run_id, "--all").stdout)) == 31
    assert len(json.loads(invoke("show", run_id, "--json").stdout)["task_runs"]) >= 31


def test_a_big_map_folds_only_under_its_parents_row():
    from iterflow.cli.history import fold_mapped_children

    kids = [{"task_slug": "m", "map_index": i, "state": "Success"} for i in range(20)]
    kids[3]["state"] = "Failed"
    # No parent row (a run that died mid-map): nothing to fold into, nothing hidden.
    assert fold_mapped_children(kids) == (kids, 0)
    parent = {"task_slug": "m", "map_index": None, "state": "Mapped"}
    rows, folded = fold_mapped_children([parent, *kids])
    assert folded == 19 and rows[1:] == [kids[3]]
    assert rows[0]["children"] == [("Success", 19), ("Failed", 1)]


@needs_store
def test_delete_removes_named_runs_and_old_ones(invoke, flow_file):
    path = flow_file("acc.py", ACCUMULATE)
    for n in (1, 2, 3):
        assert invoke("run", path, "-p", f"n={n}", "-q").exit_code == 0
    runs = json.loads(invoke("runs", "--json").stdout)
    newest, *older = [r["run_id"] for r in runs]

    result = invoke("delete", newest[:8])
    assert result.exit_code == 0 and result.stdout.strip() == "Deleted 1 run."
    assert [r["run_id"] for r in json.loads(invoke("runs", "--json").stdout)] == older
    assert invoke("show", newest).exit_code == EXIT_USAGE

    assert invoke("delete", "--older-than", "1").stdout.strip() == "Deleted 0 runs."
    assert invoke("delete", "--older-than", "0").stdout.strip() == "Deleted 2 runs."
    assert json.loads(invoke("runs", "--json").stdout) == []


@needs_store
def test_delete_needs_runs_to_delete_and_known_ones(invoke, flow_file):
    invoke("run", flow_file("acc.py", ACCUMULATE), "-q")
    nothing = invoke("delete")
    assert nothing.exit_code == EXIT_USAGE and "--older-than" in nothing.stderr
    unknown = invoke("delete", "ffffffff")
    assert unknown.exit_code == EXIT_USAGE and "No run" in unknown.stderr
    assert invoke("delete", "--state", "Failed").exit_code == EXIT_USAGE
    assert len(json.loads(invoke("runs", "--json").stdout)) == 1
    _no_traceback(unknown)


@needs_store
def test_show_iterations_of_an_unknown_task_is_a_usage_error(invoke, flow_file):
    invoke("run", flow_file("acc.py", ACCUMULATE), "-q")
    result = invoke("show", _only_run(invoke)["run_id"], "--iterations", "nope")
    assert result.exit_code == EXIT_USAGE and "nope" in result.stderr
    _no_traceback(result)


@needs_store
def test_runs_filters(invoke, flow_file):
    invoke("run", flow_file("acc.py", ACCUMULATE), "-q")
    invoke("run", flow_file("failing.py", FAILING), "-q")
    assert len(json.loads(invoke("runs", "--json").stdout)) == 2
    failed = json.loads(invoke("runs", "--json", "--state", "failed").stdout)
    assert [r["flow_name"] for r in failed] == ["failing"]
    named = json.loads(invoke("runs", "--json", "--flow", "looping accumulator").stdout)
    assert [r["state"] for r in named] == ["Success"]
    assert len(json.loads(invoke("runs", "--json", "--limit", "1").stdout)) == 1
    table = invoke("runs").stdout
    assert "failing" in table and "looping accumulator" in table


@needs_store
def test_runs_when_there_are_none(invoke):
    result = invoke("runs")
    assert result.exit_code == 0 and "No runs" in result.stdout
    assert json.loads(invoke("runs", "--json").stdout) == []


@needs_store
def test_an_unknown_run_id_exits_2(invoke, flow_file):
    invoke("run", flow_file("acc.py", ACCUMULATE), "-q")
    for command in (("show", "zzzz"), ("logs", "zzzz"), ("resume", "zzzz")):
        result = invoke(*command)
        assert result.exit_code == EXIT_USAGE, command
        assert result.stderr.startswith("error: ") and "zzzz" in result.stderr
        _no_traceback(result)


@needs_store
def test_logs_reads_back_task_records_and_prints(invoke, flow_file):
    invoke("run", flow_file("acc.py", ACCUMULATE), "-p", "n=2", "-q")
    run_id = _only_run(invoke)["run_id"]
    result = invoke("logs", run_id[:8])
    assert result.exit_code == 0
    lines = result.stdout.splitlines()
    assert any("INFO    accumulate #0: partial sum 1" in line for line in lines)
    assert any("INFO    accumulate #1: partial sum 2" in line for line in lines)
    assert any("INFO    report #0: total is 3" in line for line in lines)
    only = invoke("logs", run_id, "--task", "report").stdout
    assert "total is 3" in only and "partial sum" not in only
    # --follow on a finished run prints what there is and returns.
    assert invoke("logs", run_id, "--follow").stdout == result.stdout


@needs_store
def test_resume_refuses_a_successful_run(invoke, flow_file):
    invoke("run", flow_file("acc.py", ACCUMULATE), "-q")
    result = invoke("resume", _only_run(invoke)["run_id"])
    assert result.exit_code == EXIT_USAGE
    assert "nothing to resume" in result.stderr
    _no_traceback(result)


@needs_store
def test_resume_of_a_run_without_source_says_how_to_resume_it(invoke, flow_file):
    from iterflow.cli.run import load_flow

    flow = load_flow(str(flow_file("failing.py", FAILING))).flow
    state = flow.run()  # from Python: no source recorded
    result = invoke("resume", state.run_id)
    assert result.exit_code == EXIT_USAGE
    assert "no recorded source" in result.stderr
    assert f"flow.run(resume={state.run_id!r})" in result.stderr

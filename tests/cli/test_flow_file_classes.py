"""A loop result whose class the flow file defines resumes from either entry point.

``iterflow run boxes.py`` imports the file as its own module and ``python
boxes.py`` runs it as ``__main__``; a run started one way must resume the
other way, with the recorded values of the file's class loading in both.
"""

from __future__ import annotations

import json
import subprocess
import sys

from tests.cli.helpers import needs_store

BOXES = """
    import pathlib
    import sys

    import iterflow
    from iterflow import LOOP, Flow, task

    HERE = pathlib.Path(__file__).parent


    class Box:
        def __init__(self, items):
            self.items = items


    @task
    def fill():
        i = iterflow.context.loop_index
        box = iterflow.context.get("loop_result") or Box([])
        if i == 3 and not (HERE / "marker").exists():
            (HERE / "marker").write_text("failed once")
            raise RuntimeError("fails once at iteration 3")
        if i < 5:
            raise LOOP(result=Box(box.items + [i]))
        return sum(box.items)


    with Flow("boxes") as flow:
        filled = fill()

    if __name__ == "__main__":
        state = flow.run(resume=sys.argv[1] if len(sys.argv) > 1 else None)
        print("RESULT", state.run_id, state.name,
              state.result[filled].result if state.is_successful() else state.message)
"""


def _python(path, env, tmp_path, *args) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(path), *args], env=env, cwd=tmp_path,
                          capture_output=True, text=True, timeout=60)


def _only_run(cli) -> dict:
    [run] = json.loads(cli("runs", "--json").stdout)
    return run


@needs_store
def test_started_by_iterflow_run_resumed_by_python(cli, flow_file, env, tmp_path):
    path = flow_file("boxes.py", BOXES)
    started = cli("run", path)
    assert started.returncode == 1 and "fails once at iteration 3" in started.stderr
    run_id = _only_run(cli)["run_id"]
    resumed = _python(path, env, tmp_path, run_id)
    assert resumed.returncode == 0, resumed.stderr
    assert f"RESULT {run_id} Success 10" in resumed.stdout  # 0 + 1 + 2 + 3 + 4


@needs_store
def test_started_by_python_resumed_by_iterflow_resume(cli, flow_file, env, tmp_path):
    path = flow_file("boxes.py", BOXES)
    started = _python(path, env, tmp_path)
    assert started.returncode == 0 and "Failed" in started.stdout, started.stderr
    run = _only_run(cli)
    assert run["source"] == f"{path.resolve()}:flow"  # recorded, as `iterflow run` does
    resumed = cli("resume", run["run_id"])
    assert resumed.returncode == 0, resumed.stderr
    assert "fill Success (6 iterations" in resumed.stdout
    shown = json.loads(cli("show", run["run_id"], "--json").stdout)
    [fill] = [t for t in shown["task_runs"] if t["task_name"] == "fill"]
    assert fill["state"] == "Success" and fill["result_preview"] == "10"

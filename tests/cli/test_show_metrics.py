"""``iterflow show RUN --metrics [--json]``: per metric, count, first, last, min, max."""

from __future__ import annotations

import json

from tests.cli.helpers import needs_store

TRAIN = """
    import iterflow
    from iterflow import task, Flow, LOOP

    @task
    def train(epochs):
        i = iterflow.context.loop_index
        iterflow.log_metric("loss", 10 - i)
        iterflow.log_metric("lr", 0.5)
        if i < epochs:
            raise LOOP(result=i)
        return i

    @task
    def quiet():
        return 1

    with Flow("training") as flow:
        train(9)
        quiet()
"""


@needs_store
def test_show_metrics_summarizes_each_metric(invoke, flow_file):
    invoke("run", flow_file("train.py", TRAIN), "-q")
    [run] = json.loads(invoke("runs", "--json").stdout)
    run_id = run["run_id"]

    shown = invoke("show", run_id[:8], "--metrics")
    assert shown.exit_code == 0, shown.stderr
    lines = {line.split()[1]: line.split() for line in shown.stdout.splitlines()[1:]}
    assert lines["loss"] == ["train", "loss", "10", "10", "1", "1", "10"]
    assert lines["lr"] == ["train", "lr", "10", "0.5", "0.5", "0.5", "0.5"]

    data = json.loads(invoke("show", run_id, "--metrics", "--json").stdout)
    assert data["run_id"] == run_id
    assert data["metrics"] == [
        {"task_name": "train", "name": "loss", "count": 10, "first": 10.0, "last": 1.0,
         "min": 1.0, "max": 10.0},
        {"task_name": "train", "name": "lr", "count": 10, "first": 0.5, "last": 0.5,
         "min": 0.5, "max": 0.5},
    ]

    one_task = json.loads(
        invoke("show", run_id, "--metrics", "--iterations", "quiet", "--json").stdout
    )
    assert one_task["metrics"] == []
    assert "No metrics logged" in invoke("show", run_id, "--metrics", "--iterations",
                                         "quiet").stdout

"""Every ``--json`` is strict JSON: NaN and Infinity never appear as bare tokens."""

from __future__ import annotations

import json

from iterflow.cli.common import json_safe, json_text
from tests.cli.helpers import needs_store

NAN_FLOW = """
    import iterflow
    from iterflow import task, Flow, Parameter, LOOP

    @task
    def scale(lr, top):
        if iterflow.context.loop_index < 2:
            raise LOOP(result=lr)
        return top

    with Flow("nan params") as flow:
        scale(Parameter("lr", default=0.1), Parameter("top", default=1.0))
"""


def _strict(text: str):
    def refuse(token: str):
        raise ValueError(f"not strict JSON: bare {token}")

    return json.loads(text, parse_constant=refuse)


@needs_store
def test_runs_and_show_json_are_strict_with_nan_and_infinite_parameters(cli, flow_file):
    path = flow_file("nan.py", NAN_FLOW)
    ran = cli("run", path, "-p", "lr=NaN", "-p", "top=-Infinity")
    assert ran.returncode == 0, ran.stderr
    [run] = _strict(cli("runs", "--json").stdout)
    assert run["parameters"] == {"lr": "NaN", "top": "-Infinity"}
    shown = _strict(cli("show", run["run_id"], "--json").stdout)
    assert shown["parameters"] == {"lr": "NaN", "top": "-Infinity"}
    assert {t["task_name"] for t in shown["task_runs"]} >= {"scale"}
    history = _strict(cli("show", run["run_id"], "--iterations", "scale", "--json").stdout)
    assert [row["loop_index"] for row in history] == [0, 1, 2]
    table = cli("show", run["run_id"])
    assert '"lr": "NaN"' in table.stdout


def test_json_safe_replaces_non_finite_floats_at_any_depth():
    value = {"a": [1.0, float("inf"), {"b": (float("nan"),)}], "c": "NaN", "d": 2}
    assert json_safe(value) == {"a": [1.0, "Infinity", {"b": ["NaN"]}], "c": "NaN", "d": 2}
    assert _strict(json_text(value))["a"][1] == "Infinity"

"""``iterflow show RUN --iterations TASK`` on a long loop: first and last, a page, streamed JSON."""

from __future__ import annotations

import json
import re

from tests.cli.helpers import needs_store

LONG = """
    import iterflow
    from iterflow import task, Flow, LOOP

    @task
    def spin(n):
        if iterflow.context.loop_index < n:
            raise LOOP(result=iterflow.context.loop_index)
        return n

    with Flow("long") as flow:
        spin(499)
"""


def _iteration_rows(text: str) -> list[int]:
    return [int(m.group(1)) for m in re.finditer(r"^\s*(\d+)\s+(?:Looped|Success)", text, re.M)]


@needs_store
def test_a_long_history_shows_its_first_and_last_iterations_and_pages(cli, invoke, flow_file):
    invoke("run", flow_file("long.py", LONG), "-q")
    [run] = json.loads(invoke("runs", "--json").stdout)
    run_id = run["run_id"]

    shown = cli("show", run_id, "--iterations", "spin")
    assert shown.returncode == 0, shown.stderr
    assert "(500 states)" in shown.stdout
    assert _iteration_rows(shown.stdout) == [*range(10), *range(490, 500)]
    assert "… 480 more states (see them with --offset 10 --limit N" in shown.stdout

    page = cli("show", run_id, "--iterations", "spin", "--offset", "100", "--limit", "5")
    assert page.returncode == 0, page.stderr
    assert _iteration_rows(page.stdout) == list(range(100, 105))
    assert "states 101 to 105 of 500" in page.stdout

    rows = json.loads(cli("show", run_id, "--iterations", "spin", "--json").stdout)
    assert [r["loop_index"] for r in rows] == list(range(500))
    assert rows[-1]["state"] == "Success" and rows[0]["time"].endswith("+00:00")
    page = json.loads(
        cli("show", run_id, "--iterations", "spin", "--json", "--offset", "498").stdout
    )
    assert [r["loop_index"] for r in page] == [498, 499]

    wrong = invoke("show", run_id, "--limit", "3")
    assert wrong.exit_code == 2 and "--iterations" in wrong.stderr


@needs_store
def test_a_short_history_is_shown_whole(invoke, flow_file):
    invoke("run", flow_file("long.py", LONG.replace("499", "19")), "-q")
    [run] = json.loads(invoke("runs", "--json").stdout)
    shown = invoke("show", run["run_id"], "--iterations", "spin")
    assert _iteration_rows(shown.stdout) == list(range(20))
    assert "more states" not in shown.stdout
    empty = json.loads(invoke("show", run["run_id"], "--iterations", "spin", "--json",
                              "--offset", "20").stdout)
    assert empty == []

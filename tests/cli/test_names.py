"""Task run names and iteration labels in ``run``, ``show``, ``show --iterations`` and ``logs``."""

from __future__ import annotations

import json
import re

from tests.cli.helpers import needs_store

NAMED = """
    import iterflow
    from iterflow import task, Flow, LOOP

    @task(task_run_name="fetch {url}")
    def fetch(url):
        i = iterflow.context.loop_index
        iterflow.context.logger.info("got page %d", i)
        if i < 3:
            raise LOOP(result=i, label=f"page {i} (cursor=c{i})")
        return i

    @task
    def plain():
        return 1

    with Flow("named") as flow:
        fetch("example.org")
        plain()
"""


@needs_store
def test_names_and_labels_in_every_command(cli, invoke, flow_file):
    ran = cli("run", flow_file("named.py", NAMED))
    assert ran.returncode == 0, ran.stderr
    # The progress display and the log lines name the task run.
    assert "fetch example.org" in ran.stdout + ran.stderr
    assert "fetch example.org #2: got page 2" in ran.stdout + ran.stderr
    [run] = json.loads(invoke("runs", "--json").stdout)
    run_id = run["run_id"]

    shown = cli("show", run_id)
    assert shown.returncode == 0, shown.stderr
    assert re.search(r"^fetch example\.org\s+\(fetch\)", shown.stdout, re.M)
    data = json.loads(cli("show", run_id, "--json").stdout)
    names = {t["task_slug"]: t["task_run_name"] for t in data["task_runs"]}
    assert names == {"fetch": "fetch example.org", "plain": None}

    table = cli("show", run_id, "--iterations", "fetch")
    assert table.returncode == 0, table.stderr
    assert re.search(r"^\s*label\b|\blabel\b", table.stdout.splitlines()[1])
    for i in range(3):
        assert re.search(rf"^\s*{i}\s+Looped\s+\S+ \S+\s+page {i} \(cursor=c{i}\)", table.stdout,
                         re.M)
    rows = json.loads(cli("show", run_id, "--iterations", "fetch", "--json").stdout)
    assert [r["label"] for r in rows] == ["page 0 (cursor=c0)", "page 1 (cursor=c1)",
                                          "page 2 (cursor=c2)", None]

    logs = invoke("logs", run_id)
    assert logs.exit_code == 0
    assert "fetch example.org #1: got page 1" in logs.stdout


@needs_store
def test_iterations_without_labels_have_no_label_column(cli, invoke, flow_file):
    source = NAMED.replace(', label=f"page {i} (cursor=c{i})"', "")
    invoke("run", flow_file("plain.py", source), "-q")
    [run] = json.loads(invoke("runs", "--json").stdout)
    table = cli("show", run["run_id"], "--iterations", "fetch")
    assert table.returncode == 0, table.stderr
    assert "label" not in table.stdout.splitlines()[1]
    rows = json.loads(cli("show", run["run_id"], "--iterations", "fetch", "--json").stdout)
    assert {r["label"] for r in rows} == {None}


MAPPED = """
    import iterflow
    from iterflow import task, Flow, LOOP

    @task(task_run_name="crawl {site}")
    def crawl(site):
        i = iterflow.context.loop_index
        if i < len(site):
            raise LOOP(result=i)
        return i

    with Flow("mapped names") as flow:
        crawl.map(["ab", "abcd"])
"""


@needs_store
def test_iterations_by_task_run_name(cli, invoke, flow_file):
    """A task run's own name finds it, a mapped child without its map index too."""
    invoke("run", flow_file("mapped.py", MAPPED), "-q")
    [run] = json.loads(invoke("runs", "--json").stdout)
    rows = json.loads(cli("show", run["run_id"], "--iterations", "crawl abcd", "--json").stdout)
    assert [r["state"] for r in rows] == ["Looped"] * 4 + ["Success"]
    by_index = json.loads(
        cli("show", run["run_id"], "--iterations", "crawl", "--map-index", "1", "--json").stdout
    )
    assert by_index == rows
    table = cli("show", run["run_id"], "--iterations", "crawl ab")
    assert table.returncode == 0, table.stderr
    assert len(re.findall(r"^\s*\d+\s+Looped", table.stdout, re.M)) == 2
    missing = cli("show", run["run_id"], "--iterations", "crawl nowhere")
    assert missing.returncode != 0
    assert "task run name" in missing.stderr

"""The dashboard on what the engine itself records: a real flow run, not made-up events."""

from __future__ import annotations

import re

from starlette.testclient import TestClient

import iterflow
from iterflow import LOOP, Flow, loop, task
from iterflow.store import open_store
from iterflow.ui import create_app

FLAKY = {"failed": False}


@task(max_retries=1)
def count(limit):
    i = iterflow.context.loop_index
    if i == 7 and not FLAKY["failed"]:
        FLAKY["failed"] = True
        raise ValueError("flaky at 7")
    iterflow.context.logger.info("counted %d", i)
    if i < limit:
        raise LOOP(result=i + 1)
    return i


@task
def square(x):
    return x * x


@task
def step(state):
    return state + 1


@task
def done(state):
    return state >= 4


def build() -> Flow:
    with Flow("real dashboard") as flow:
        total = count(limit=iterflow.Parameter("limit", default=30))
        square.map([1, 2, 3, 4, 5])
        with loop(initial=0, max_loops=50, name="grow") as it:
            new = step(it.result)
            it.next(result=new, until=done(new))
        _ = total
    return flow


def test_a_real_run_on_every_page(tmp_path):
    url = f"sqlite:///{tmp_path}/iterflow.db"
    FLAKY["failed"] = False
    state = build().run(store=url)
    assert state.is_successful(), state
    with open_store(url, home=tmp_path) as store, TestClient(create_app(store)) as c:
        run_id = state.run_id
        assert run_id in c.get("/").text
        page = c.get(f"/runs/{run_id[:8]}").text
        count_panel = page.split('id="loop-count"')[1].split("</section>")[0]
        assert '<span class="big">31</span> iterations' in count_panel
        assert "1 Retrying" in count_panel and "first failure: #7" in count_panel
        assert 'id="loop-grow"' in page and "Loop block" in page
        assert "map \u00d7 5" in page and "5 Success" in page
        failed = c.get(f"/runs/{run_id}/iterations/count?failed=1").text
        assert re.findall(r"/iterations/(\d+)/count\">", failed) == ["7"]
        seven = c.get(f"/runs/{run_id}/iterations/7/count").text
        assert "ValueError: flaky at 7" in seven and "counted 7" in seven
        block = c.get(f"/runs/{run_id}/iterations/2/grow").text
        assert f"/runs/{run_id}/tasks/grow/2/step" in block
        assert c.get(f"/runs/{run_id}/tasks/grow/2/step").status_code == 200
        children = c.get(f"/runs/{run_id}/tasks/square").text
        assert re.findall(r"/tasks/square/(\d+)\">", children) == ["0", "1", "2", "3", "4"]
        logs = c.get(f"/runs/{run_id}/logs?task=count&iteration=12").text
        assert "counted 12" in logs and "counted 11" not in logs
        svg = c.get(f"/runs/{run_id}/graph.svg").text
        assert "\u00d731" in svg and "4 iterations" in svg

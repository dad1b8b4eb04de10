"""Task run names and iteration labels on the dashboard's pages, and the label search
(done by the store, page by page), on SQLite and PostgreSQL."""

from __future__ import annotations

import re

import pytest
from starlette.testclient import TestClient

import iterflow
from iterflow import LOOP, Flow, loop, task
from iterflow.store import iteration_page, open_store, run_shape
from iterflow.ui import create_app
from tests.backends import BACKENDS, postgres_schema


@task(task_run_name="walk {site}")
def walk(site, pages):
    i = iterflow.context.loop_index
    # Every 7th page is a "checkpoint" page; labels with % and _ test the escaping.
    label = f"checkpoint {i}" if i % 7 == 0 else f"page {i} 10%_off"
    iterflow.set_iteration_label(label)
    if i < pages:
        raise LOOP(result=i)
    return i


@task(task_run_name="item {x}")
def item(x):
    return x


@task
def step(total):
    return total + 1


@task
def done(total):
    return total >= 3


@task
def describe(total):
    return f"block total {total}"


def _flow() -> Flow:
    with Flow("labelled dashboard") as flow:
        walk("example.org", 120)
        item.map(["a", "b"])
        with loop(initial=0, max_loops=10, name="grow") as it:
            new = step(it.result)
            it.next(result=new, until=done(new), label=describe(new))
    return flow


@pytest.fixture(scope="module", params=BACKENDS)
def recorded(request, tmp_path_factory):
    home = tmp_path_factory.mktemp("names-ui")
    if request.param == "sqlite":
        url = f"sqlite:///{home}/iterflow.db"
        state = _flow().run(store=url)
        with open_store(url, home=home) as store:
            yield store, state.run_id
    else:
        with postgres_schema("names") as url:
            state = _flow().run(store=url)
            with open_store(url, home=home) as store:
                yield store, state.run_id


def test_the_store_searches_labels_page_by_page(recorded):
    store, run_id = recorded
    key = {g.task_slug: g.key for g in run_shape(store, run_id).tasks}["walk"]
    first = iteration_page(store, key, label="CHECKPOINT", limit=5)
    assert [r.loop_index for r in first.rows] == [0, 7, 14, 21, 28]
    assert all(r.label == f"checkpoint {r.loop_index}" for r in first.rows)
    second = iteration_page(store, key, start=first.next_from, label="checkpoint", limit=5)
    assert [r.loop_index for r in second.rows] == [35, 42, 49, 56, 63]
    assert second.prev_from == 0
    # % and _ are plain characters, not wildcards.
    assert [r.loop_index for r in iteration_page(store, key, label="10%_", limit=3).rows] == [
        1, 2, 3]
    assert iteration_page(store, key, label="10%x").rows == []
    assert iteration_page(store, key, label="nothing like it").rows == []


def test_pages_show_names_and_labels(recorded):
    store, run_id = recorded
    with TestClient(create_app(store)) as c:
        run = c.get(f"/runs/{run_id}").text
        assert "walk example.org" in run and '<span class="tag">walk</span>' in run
        children = c.get(f"/runs/{run_id}/tasks/item").text
        assert "item a" in children and "item b" in children
        table = c.get(f"/runs/{run_id}/iterations/walk").text
        assert "<th>Label</th>" in table and "checkpoint 0" in table
        assert 'name="label"' in table
        found = c.get(f"/runs/{run_id}/iterations/walk", params={"label": "checkpoint 1"}).text
        # checkpoint 14, 105, 112, 119 contain "checkpoint 1".
        assert re.findall(r"/iterations/(\d+)/walk\">", found) == ["14", "105", "112", "119"]
        assert 'value="checkpoint 1"' in found
        none = c.get(f"/runs/{run_id}/iterations/walk", params={"label": "<b>x</b>"}).text
        assert "No iterations labelled “&lt;b&gt;x&lt;/b&gt;”" in none  # escaped
        paged = c.get(f"/runs/{run_id}/iterations/walk", params={"label": "page"}).text
        assert "label=page" in paged  # the pager keeps the search
        one = c.get(f"/runs/{run_id}/iterations/7/walk").text
        assert "Label: <strong>checkpoint 7</strong>" in one
        assert "walk example.org, iteration 7" in one
        block = c.get(f"/runs/{run_id}/iterations/grow").text
        assert "block total 1" in block and "block total 3" in block
        logs = c.get(f"/runs/{run_id}/logs").text
        assert logs  # the page renders with names in the query

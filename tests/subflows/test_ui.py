"""The dashboard links a parent run and its child runs, and shows a child in its iteration."""

from __future__ import annotations

import pytest

pytest.importorskip("starlette")
pytest.importorskip("jinja2")

from starlette.testclient import TestClient

from iterflow import Flow, Parameter, loop, task
from iterflow.store import open_store
from iterflow.store.children import child_runs
from iterflow.ui import create_app


@task
def inc(x):
    return x + 1


@task
def at_least(x, n):
    return x >= n


def test_run_pages_link_parent_and_children_and_an_iteration_shows_its_child(tmp_path):
    with Flow("<child & co>") as child:  # a name that must be escaped
        inc(Parameter("x"))
    with Flow("parent") as parent, loop(initial=0, max_loops=5) as it:
        out = child(x=it.result)
        it.next(result=out, until=at_least(out, 2))
    with open_store(f"sqlite:///{tmp_path / 'runs.db'}", home=tmp_path) as store:
        state = parent.run(store=store)
        assert state.is_successful(), state
        kids = child_runs(state.run_id, store=store)
        assert len(kids) == 2
        with TestClient(create_app(store, interval=0.05)) as client:
            page = client.get(f"/runs/{state.run_id}")
            assert page.status_code == 200
            assert "Child runs" in page.text
            for kid in kids:
                assert f'href="/runs/{kid.run_id}"' in page.text
            assert "&lt;child &amp; co&gt;" in page.text and "<child & co>" not in page.text
            child_page = client.get(f"/runs/{kids[1].run_id}")
            assert child_page.status_code == 200
            assert "Started by" in child_page.text
            assert f'href="/runs/{state.run_id}"' in child_page.text
            assert "iteration 1" in child_page.text
            # The block's iteration 1 lists the child run it started, and only that one.
            block = next(t for t in parent.tasks if type(t).__name__ == "LoopBlock")
            iteration = client.get(f"/runs/{state.run_id}/iterations/1/{block.slug}")
            assert iteration.status_code == 200, iteration.text
            assert f'href="/runs/{kids[1].run_id}"' in iteration.text
            assert f'href="/runs/{kids[0].run_id}"' not in iteration.text

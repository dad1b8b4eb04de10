"""The store's links from child runs to parents, its migration, and the CLI's views of them."""

from __future__ import annotations

import json

import pytest
import sqlalchemy as sa

from iterflow import Flow, Parameter, loop, task
from iterflow.runids import subflow_run_id
from iterflow.store import open_store
from iterflow.store.children import child_runs, list_runs, parent_of
from iterflow.store.migrations import MIGRATIONS, _add_flow_run_parents
from iterflow.store.runstore import RunStore
from tests.store.test_migration import build_v1_store


@task
def add(x, y):
    return x + y


@task
def at_least(x, n):
    return x >= n


def adder() -> Flow:
    with Flow("adder") as child:
        add(Parameter("x"), 1)
    return child


def nested_parent() -> tuple[Flow, dict]:
    child = adder()
    with Flow("parent") as parent:
        single = child(x=1)
        mapped = child.map(x=[10, 20])
        with loop(initial=0, max_loops=5) as it:
            body = child(x=it.result)
            it.next(result=body, until=at_least(body, 3))
    return parent, {"single": single, "mapped": mapped, "body": body}


def test_each_child_run_is_linked_to_its_parent_task_run_and_iteration(tmp_path):
    url = f"sqlite:///{tmp_path / 'runs.db'}"
    parent, tasks = nested_parent()
    state = parent.run(store=url)
    assert state.is_successful(), state
    store = open_store(url)
    children = child_runs(state.run_id, store=store)
    assert len(children) == 1 + 2 + 3  # single, two mapped, three loop iterations
    assert {c.flow_name for c in children} == {"adder"}
    assert {c.state for c in children} == {"Success"}
    by_task: dict[str, list] = {}
    for c in children:
        by_task.setdefault(c.task_slug, []).append(c)
    single = by_task[tasks["single"].slug]
    assert [(c.map_index, c.block_index) for c in single] == [(None, None)]
    assert single[0].parent_task_run_id == f"{state.run_id}/{tasks['single'].slug}"
    assert single[0].run_id == subflow_run_id(single[0].parent_task_run_id)
    mapped = sorted(by_task[tasks["mapped"].slug], key=lambda c: c.map_index)
    assert [c.map_index for c in mapped] == [0, 1]
    body = by_task[tasks["body"].slug]
    assert sorted(c.block_index for c in body) == [0, 1, 2]
    assert {c.loop_index for c in children} == {0}
    link = parent_of(body[0].run_id, store=store)
    assert link is not None and link.parent_run_id == state.run_id
    assert link.parent_task_run_id == body[0].parent_task_run_id
    assert parent_of(state.run_id, store=store) is None


def test_listing_runs_leaves_children_out_unless_asked(tmp_path):
    url = f"sqlite:///{tmp_path / 'runs.db'}"
    parent, _ = nested_parent()
    state = parent.run(store=url)
    adder().run(parameters={"x": 1}, store=url)  # a run of the same flow on its own
    top = list_runs(limit=None, store=url)
    assert sorted(r.flow_name for r in top) == ["adder", "parent"]
    assert state.run_id in {r.run_id for r in top}
    everything = list_runs(limit=None, include_children=True, store=url)
    assert len(everything) == 2 + 6
    assert [r.run_id for r in list_runs(limit=1, store=url)] == [top[0].run_id]
    assert list_runs(state="Success", flow_name="adder", store=url)[0].flow_name == "adder"
    assert len(list_runs(state="Success", flow_name="adder", include_children=True,
                         store=url)) == 7


def _migration_index() -> int:
    return MIGRATIONS.index(_add_flow_run_parents)


def test_the_migration_adds_the_links_to_a_store_that_has_runs(tmp_path):
    url = f"sqlite:///{tmp_path / 'runs.db'}"
    # A store as it was before this migration: every migration before it, and a run.
    before = MIGRATIONS[: _migration_index()]
    with RunStore(url, migrations=before) as old:
        old_version = old.schema_version
        with old.engine.begin() as conn:
            conn.exec_driver_sql("DROP TABLE flow_run_parents")  # not there yet back then
    earlier = adder().run(parameters={"x": 1}, store=RunStore(url, migrations=before))
    assert earlier.is_successful()
    with open_store(url) as store:
        assert store.schema_version == 1 + len(MIGRATIONS) > old_version
        assert "flow_run_parents" in sa.inspect(store.engine).get_table_names()
        assert [r.run_id for r in list_runs(store=store)] == [earlier.run_id]
        parent, _ = nested_parent()
        state = parent.run(store=store)
        assert state.is_successful(), state
        assert len(child_runs(state.run_id, store=store)) == 6
        top = {r.run_id for r in list_runs(store=store)}
        assert top == {earlier.run_id, state.run_id}


def test_a_version_1_store_upgrades_through_every_migration_and_lists_its_runs(tmp_path):
    url = f"sqlite:///{tmp_path / 'v1.db'}"
    build_v1_store(url)
    with open_store(url) as store:
        runs = list_runs(limit=None, store=store)
        assert len(runs) == 2 and all(parent_of(r.run_id, store=store) is None for r in runs)


# -- the command line ---------------------------------------------------------

FLOW_FILE = '''
from iterflow import Flow, Parameter, loop, task

@task
def add(x, y):
    return x + y

@task
def at_least(x, n):
    return x >= n

with Flow("adder") as child:
    add(Parameter("x"), 1)

with Flow("parent") as flow:
    child.map(x=[10, 20])
    with loop(initial=0, max_loops=5) as it:
        body = child(x=it.result)
        it.next(result=body, until=at_least(body, 2))
'''


@pytest.fixture
def cli(tmp_path, monkeypatch):
    """``cli(*args)``: the command line in-process, on a store of its own (one nested run)."""
    from click.testing import CliRunner

    from iterflow.cli.main import cli as group

    home = tmp_path / "home"
    home.mkdir()
    monkeypatch.setenv("ITERFLOW_HOME", str(home))
    monkeypatch.delenv("ITERFLOW_STORE_URL", raising=False)
    monkeypatch.setenv("NO_COLOR", "1")
    monkeypatch.setenv("COLUMNS", "200")
    monkeypatch.chdir(tmp_path)

    def run(*args: str):
        return CliRunner().invoke(group, list(args), catch_exceptions=False)

    (tmp_path / "nested.py").write_text(FLOW_FILE)
    done = run("run", "nested.py:flow")
    assert done.exit_code == 0, done.output
    return run


def test_cli_runs_hides_child_runs_unless_all(cli):
    shown = json.loads(cli("runs", "--json").output)
    assert [r["flow_name"] for r in shown] == ["parent"]
    every = json.loads(cli("runs", "--json", "--all").output)
    assert sorted(r["flow_name"] for r in every) == ["adder"] * 4 + ["parent"]
    [top] = [r for r in every if r["flow_name"] == "parent"]
    assert top["parent_run_id"] is None and shown[0]["parent_run_id"] is None
    assert {r["parent_run_id"] for r in every if r["flow_name"] == "adder"} == {top["run_id"]}
    table = cli("runs").output
    assert "parent" in table and "adder" not in table
    assert "adder" in cli("runs", "--all").output


def test_cli_show_lists_child_runs_under_their_task_and_a_child_names_its_parent(cli):
    parent_id = json.loads(cli("runs", "--json").output)[0]["run_id"]
    shown = json.loads(cli("show", parent_id, "--json").output)
    assert shown["parent"] is None
    kids = shown["child_runs"]
    assert len(kids) == 4
    assert sorted((k["task_slug"], k["map_index"], k["block_index"]) for k in kids) == [
        ("adder", 0, None), ("adder", 1, None), ("adder-2", None, 0), ("adder-2", None, 1),
    ]
    assert all(k["state"] == "Success" and k["flow_name"] == "adder" for k in kids)
    # Each task run that started a child names it.
    starters = {t["task_run_id"]: t.get("child_run_id") for t in shown["task_runs"]}
    assert {k["run_id"] for k in kids} == {
        starters[k["parent_task_run_id"]] for k in kids
    }
    table = cli("show", parent_id).output
    assert "Child runs" in table
    for k in kids:
        assert k["run_id"][:8] in table
    child = kids[0]["run_id"]
    child_view = json.loads(cli("show", child, "--json").output)
    assert child_view["parent"]["parent_run_id"] == child_view["parent_run_id"] == parent_id
    assert child_view["child_runs"] == []
    assert f"Child run of {parent_id}" in cli("show", child).output


def test_a_resumed_parent_links_children_whose_links_a_crash_lost(tmp_path):
    url = f"sqlite:///{tmp_path / 'runs.db'}"
    ran: list[int] = []
    broken = {"yes": True}

    @task
    def count(x):
        ran.append(x)
        return x

    @task
    def maybe_fail(xs):
        if broken["yes"]:
            raise RuntimeError("not yet")
        return sum(xs)

    with Flow("counter") as child:
        count(Parameter("x"))
    with Flow("parent") as parent:
        maybe_fail(child.map(x=[1, 2, 3]))
    failed = parent.run(store=url)
    assert failed.is_failed()
    store = open_store(url)
    with store.engine.begin() as conn:  # as if the process died before the links' batch
        conn.execute(sa.delete(sa.table("flow_run_parents")))
    assert len(list_runs(store=store)) == 4  # the children look like runs of their own
    broken["yes"] = False
    resumed = parent.run(resume=failed.run_id, store=store)
    assert resumed.is_successful(), resumed
    assert ran == [1, 2, 3]  # the children were not run again
    assert [r.run_id for r in list_runs(store=store)] == [failed.run_id]
    assert sorted(c.map_index for c in child_runs(failed.run_id, store=store)) == [0, 1, 2]


def test_deleting_a_parent_leaves_its_children_as_runs_of_their_own(tmp_path):
    from iterflow.store import delete_run

    url = f"sqlite:///{tmp_path / 'runs.db'}"
    child = adder()
    with Flow("parent") as parent:
        child.map(x=[1, 2])
    state = parent.run(store=url)
    kids = [c.run_id for c in child_runs(state.run_id, store=url)]
    delete_run(kids[0], store=url)
    assert [c.run_id for c in child_runs(state.run_id, store=url)] == kids[1:]
    delete_run(state.run_id, store=url)
    assert [r.run_id for r in list_runs(store=url)] == kids[1:]
    assert parent_of(kids[1], store=url) is None

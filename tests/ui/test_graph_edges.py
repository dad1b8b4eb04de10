"""The flow's shape recorded with each run: its migration, the dashboard's edges, the CLI."""

from __future__ import annotations

import xml.etree.ElementTree as ET

import sqlalchemy as sa
from starlette.testclient import TestClient

import iterflow.store
from iterflow.cli.main import cli as cli_group
from iterflow.core.shape import describe
from iterflow.store import open_store, run_shape
from iterflow.store.migrations import MIGRATIONS, _add_flow_run_shapes
from iterflow.store.runstore import RunStore
from iterflow.ui import create_app
from tests.ui.stores import write_big_run

SVG = "{http://www.w3.org/2000/svg}"

FLOW_SOURCE = '''
import iterflow
from iterflow import LOOP, Flow, loop, task

@task
def start():
    return 2

@task
def grind(n):
    if iterflow.context.loop_index < n:
        raise LOOP(result=iterflow.context.loop_index)
    return n

@task
def step(total, i):
    return total + i

@task
def enough(total):
    return total >= 3

@task
def report(a, b):
    return (a, b)

with Flow("pictured") as flow:
    g = grind(start())
    with loop(initial=0, max_loops=9, name="adding") as it:
        total = step(it.result, it.index)
        it.next(total, until=enough(total))
    report(g, it.final)
'''


def edges(svg: str) -> set[tuple[str, str]]:
    root = ET.fromstring(svg.split("?>", 1)[-1])
    return {(p.get("data-from"), p.get("data-to")) for p in root.iter(f"{SVG}path")
            if "edge" in p.get("class", "").split()}


def run_pictured(tmp_path, store):
    path = tmp_path / "pictured.py"
    path.write_text(FLOW_SOURCE)
    namespace: dict = {}
    exec(compile(FLOW_SOURCE, str(path), "exec"), namespace)
    flow = namespace["flow"]
    state = flow.run(store=store)
    return flow, state, path


def test_a_run_records_its_flow_shape_and_the_dashboard_draws_its_edges(tmp_path):
    with open_store(f"sqlite:///{tmp_path}/iterflow.db", home=tmp_path) as store:
        flow, state, _path = run_pictured(tmp_path, store)
        shape = run_shape(store, state.run_id)
        assert shape.graph == describe(flow)
        with TestClient(create_app(store)) as client:
            svg = client.get(f"/runs/{state.run_id}/graph.svg").text
            page = client.get(f"/runs/{state.run_id}").text
        assert edges(svg) == {("start", "grind"), ("grind", "report"), ("adding", "report"),
                              ("step", "enough")}
        assert "\u00d73" in svg and "3 iterations" in svg  # grind ran 3 times, the block too
        assert 'data-from="grind"' in page  # inline on the run page too


def test_the_migration_adds_the_table_to_a_store_with_data(tmp_path):
    url = f"sqlite:///{tmp_path}/iterflow.db"
    with open_store(url, home=tmp_path) as store:
        old = write_big_run(store, loops=20, block=3, width=3)
        before = run_shape(store, old.run_id)
    # Put the store back where it was before this migration, whichever
    # migrations come before it, and upgrade it with them plus this one.
    step = MIGRATIONS.index(_add_flow_run_shapes)
    engine = sa.create_engine(url)
    with engine.begin() as conn:
        conn.exec_driver_sql("DROP TABLE flow_run_shapes")
        conn.exec_driver_sql(f"UPDATE schema_version SET version = {step + 1}")
    engine.dispose()
    with RunStore(url, home=tmp_path, migrations=MIGRATIONS[: step + 1]) as store:
        assert store.schema_version == step + 2
        assert "flow_run_shapes" in sa.inspect(store.engine).get_table_names()
        after = run_shape(store, old.run_id)
        # A run recorded before: the same tasks, no recorded graph, drawn without edges.
        assert after.graph is None and [g.task_slug for g in after.tasks] == [
            g.task_slug for g in before.tasks]
        with TestClient(create_app(store)) as client:
            svg = client.get(f"/runs/{old.run_id}/graph.svg").text
        assert not edges(svg) and 'data-task="grind"' in svg
        # A new run records its shape; running the migration again changes nothing.
        _flow, state, _path = run_pictured(tmp_path, store)
        assert run_shape(store, state.run_id).graph is not None
        store.write(_add_flow_run_shapes)
        assert run_shape(store, state.run_id).graph is not None


def test_deleting_a_run_deletes_its_shape(tmp_path):
    with open_store(f"sqlite:///{tmp_path}/iterflow.db", home=tmp_path) as store:
        _flow, state, _path = run_pictured(tmp_path, store)
        iterflow.store.delete_run(state.run_id, store=store)
        left = store.read(lambda conn: conn.exec_driver_sql(
            "SELECT count(*) FROM flow_run_shapes").scalar())
        assert left == 0


def test_iterflow_visualize_draws_a_file_and_a_recorded_run(tmp_path, monkeypatch):
    from click.testing import CliRunner

    monkeypatch.setenv("ITERFLOW_STORE_URL", f"sqlite:///{tmp_path}/iterflow.db")
    with open_store(f"sqlite:///{tmp_path}/iterflow.db", home=tmp_path) as store:
        _flow, state, path = run_pictured(tmp_path, store)
    runner = CliRunner()
    plain = runner.invoke(cli_group, ["visualize", str(path)], catch_exceptions=False)
    assert plain.exit_code == 0, plain.output
    assert ("grind", "report") in edges(plain.stdout) and "\u00d73" not in plain.stdout
    out = tmp_path / "run.svg"
    coloured = runner.invoke(
        cli_group, ["visualize", f"{path}:flow", "-o", str(out), "--run", state.run_id[:8]],
        catch_exceptions=False)
    assert coloured.exit_code == 0, coloured.output
    svg = out.read_text()
    assert "\u00d73" in svg and "3 iterations" in svg and "Success" in svg
    assert ("adding", "report") in edges(svg)
    wrong = runner.invoke(cli_group, ["visualize", str(path), "--run", "nosuchrun"])
    assert wrong.exit_code != 0 and "nosuchrun" in wrong.output



MIXED_SOURCE = FLOW_SOURCE.replace('''with Flow("pictured") as flow:''', '''@task
def square(x):
    return x * x

with Flow("pictured") as flow:
    squares = square.map([1, 2, 3, 4])''')


def test_one_renderer_for_visualize_the_cli_and_the_dashboard(tmp_path, monkeypatch):
    # A looping task, a loop block and a map, drawn from a recorded run three
    # ways: flow.visualize(flow_state=...), `iterflow visualize --run` and the
    # dashboard's graph.svg. Same nodes, edges, loop edges and labels.
    from click.testing import CliRunner

    from tests.core.test_visualize import edges as typed_edges
    from tests.core.test_visualize import nodes, parse, texts

    url = f"sqlite:///{tmp_path}/iterflow.db"
    monkeypatch.setenv("ITERFLOW_STORE_URL", url)
    path = tmp_path / "mixed.py"
    path.write_text(MIXED_SOURCE)
    namespace: dict = {}
    exec(compile(MIXED_SOURCE, str(path), "exec"), namespace)
    flow = namespace["flow"]
    with open_store(url, home=tmp_path) as store:
        state = flow.run(store=store)
        assert state.is_successful(), state
        with TestClient(create_app(store)) as client:
            served = client.get(f"/runs/{state.run_id}/graph.svg").text
    out = tmp_path / "cli.svg"
    cli = CliRunner().invoke(cli_group, ["visualize", str(path), "-o", str(out),
                                         "--run", state.run_id], catch_exceptions=False)
    assert cli.exit_code == 0, cli.output
    drawn = {"visualize": parse(flow.visualize(flow_state=state)),
             "cli": parse(out.read_text()), "dashboard": parse(served)}
    for how, root in drawn.items():
        # The mapped list is a constant task of its own ("square.x").
        assert set(nodes(root, body=False)) == {"start", "grind", "adding", "report",
                                                "square", "square.x"}, how
        assert set(nodes(root, body=True)) == {"step", "enough"}, how
        assert typed_edges(root) >= {("start", "grind"), ("grind", "report"),
                                     ("adding", "report"), ("step", "enough"),
                                     ("square.x", "square")}, how
        assert len([p for p in nodes(root)["grind"].iter(f"{SVG}path")
                    if p.get("class") == "loop-edge"]) == 1, how
        assert "\u00d73" in texts(nodes(root)["grind"]), how  # iterations 0..2
        assert len([p for p in nodes(root)["adding"].iter(f"{SVG}path")
                    if p.get("class") == "back-edge"]) == 1, how
        assert "3 iterations" in texts(nodes(root)["adding"]), how
        assert any("map \u00d7 4" in t for t in texts(nodes(root)["square"])), how
    assert (typed_edges(drawn["visualize"]) == typed_edges(drawn["cli"])
            == typed_edges(drawn["dashboard"]))

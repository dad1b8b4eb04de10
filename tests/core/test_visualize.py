"""flow.visualize(): the SVG read back with xml.etree — nodes, edges, labels."""

from __future__ import annotations

import xml.etree.ElementTree as ET

import pytest

import iterflow
from iterflow import LOOP, Flow, Parameter, loop, task
from iterflow.core.shape import describe
from iterflow.errors import IterflowError

SVG = "{http://www.w3.org/2000/svg}"


def parse(svg: str) -> ET.Element:
    return ET.fromstring(svg.split("?>", 1)[-1])  # the XML header, when there is one


def nodes(root: ET.Element, body: bool | None = None) -> dict[str, ET.Element]:
    found = {}
    for g in root.iter(f"{SVG}g"):
        classes = g.get("class", "").split()
        if "node" in classes and (body is None or ("body" in classes) == body):
            found[g.get("data-task")] = g
    return found


def edges(root: ET.Element, kind: str = "edge") -> set[tuple[str, str]]:
    return {(p.get("data-from"), p.get("data-to")) for p in root.iter(f"{SVG}path")
            if kind in p.get("class", "").split()}


def texts(el: ET.Element) -> list[str]:
    return [t.text or "" for t in el.iter(f"{SVG}text")]


@task
def start():
    return 3


@task
def grind(n):
    i = iterflow.context.loop_index
    if i < n:
        raise LOOP(result=i)
    return i


@task
def items():
    return [1, 2, 3]


@task
def square(x):
    return x * x


@task
def step(total, i):
    return total + i


@task
def enough(total):
    return total >= 10


@task
def report(total):
    return f"total {total}"


def loop_flow() -> tuple[Flow, object]:
    with Flow("grinding") as flow:
        g = grind(start())
    return flow, g


def test_a_looping_task_gets_a_self_edge_labelled_with_its_count():
    flow, _g = loop_flow()
    state = flow.run(store=None)
    root = parse(flow.visualize(flow_state=state))
    found = nodes(root)
    assert set(found) == {"start", "grind"}
    assert edges(root) == {("start", "grind")}
    loop_edges = [p for p in found["grind"].iter(f"{SVG}path") if p.get("class") == "loop-edge"]
    assert len(loop_edges) == 1
    assert "\u00d74" in texts(found["grind"])  # iterations 0..3
    assert "Success" in texts(found["grind"])
    assert "n" in texts(root)  # the edge carries argument n
    # Without a state: the same nodes and edges, no counts, nothing coloured by state.
    plain = parse(flow.visualize())
    assert set(nodes(plain)) == {"start", "grind"} and edges(plain) == {("start", "grind")}
    assert not edges(plain, "loop-edge") and "Success" not in texts(plain)


def test_a_loop_block_is_a_frame_with_its_body_and_a_back_edge():
    with Flow("block") as flow:
        with loop(initial=0, max_loops=50, name="adding") as it:
            total = step(it.result, it.index)
            it.next(total, until=enough(total))
        report(it.final)
    state = flow.run(store=None)
    root = parse(flow.visualize(flow_state=state))
    top = nodes(root, body=False)
    assert set(top) == {"adding", "report"}
    assert set(nodes(root, body=True)) == {"step", "enough"}
    assert edges(root) >= {("adding", "report"), ("step", "enough")}
    assert ("step", "enough") in edges(root, "body-edge")
    backs = [p for p in top["adding"].iter(f"{SVG}path") if p.get("class") == "back-edge"]
    assert len(backs) == 1
    assert "5 iterations" in texts(top["adding"])  # 0+0+1+2+3+4 = 10
    assert "loop adding" in texts(top["adding"])
    # The placeholders it.result and it.index are not drawn.
    assert all("result" not in slug and "index" not in slug for slug in nodes(root))


def test_a_mapped_task_shows_its_width_and_a_dashed_labelled_edge():
    with Flow("mapping") as flow:
        square.map(items())
    state = flow.run(store=None)
    root = parse(flow.visualize(flow_state=state))
    assert edges(root) == {("items", "square")}
    edge = next(p for p in root.iter(f"{SVG}path") if p.get("class") == "edge")
    assert edge.get("stroke-dasharray")
    assert "map x" in texts(root)
    assert any("map \u00d7 3" in t and "3 Success" in t for t in texts(nodes(root)["square"]))
    # Before any run the map is drawn as one, its width unknown.
    assert "mapped" in texts(parse(flow.visualize()))


def test_visualize_writes_the_file_and_draws_only_svg(tmp_path):
    flow, _g = loop_flow()
    out = tmp_path / "flow.svg"
    svg = flow.visualize(out)
    assert out.read_text(encoding="utf-8") == svg
    assert svg.startswith("<?xml")
    with pytest.raises(IterflowError, match="SVG only") as caught:
        flow.visualize(format="png")
    assert isinstance(caught.value, ValueError)
    inline = flow._repr_svg_()
    assert inline.startswith("<svg") and set(nodes(parse(inline))) == {"start", "grind"}


def test_names_are_escaped():
    @task(name="<b>&\"x\"")
    def odd(p):
        return p

    with Flow("escaping") as flow:
        odd(Parameter("p<"))
    root = parse(flow.visualize())  # parses: nothing unescaped
    assert any(t.startswith("<b>&") for t in texts(root))


def test_describe_lists_edges_keys_maps_and_blocks():
    with Flow("shape") as flow:
        with loop(initial=0, max_loops=5, name="adding") as it:
            total = step(it.result, it.index)
            it.next(total, until=enough(total))
        square.map(items())
    tasks = {t["slug"]: t for t in describe(flow)["tasks"]}
    assert tasks["step"]["block"] == "adding" and tasks["adding"]["kind"] == "block"
    assert tasks["enough"]["upstream"] == [{"from": "step", "key": "total"}]
    assert tasks["square"]["upstream"] == [{"from": "items", "key": "x", "mapped": True}]
    assert tasks["square"]["mapped"] is True
    assert not any(t.get("block") is None and t["slug"].startswith("adding.") for t in
                   tasks.values())


@task
def breaks(n):
    raise ValueError(f"broken at {n}")


def _colour(node: ET.Element) -> str:
    """A node's state colour: the stroke of its box."""
    return next(r.get("stroke") for r in node.iter(f"{SVG}rect") if r.get("stroke"))


def test_states_are_colours_and_a_loop_inside_a_block_is_a_body_node():
    from iterflow.ui.graph import COLOURS

    with Flow("coloured") as flow:
        g = grind(2)
        breaks(g)
        with loop(initial=0, max_loops=50, name="adding") as it:
            total = step(it.result, it.index)
            grind(1)
            it.next(total, until=enough(total))
    state = flow.run(store=None)
    root = parse(flow.visualize(flow_state=state))
    top = nodes(root, body=False)
    assert set(top) == {"grind", "breaks", "adding"}
    assert _colour(top["grind"]) == COLOURS["Success"]
    assert _colour(top["breaks"]) == COLOURS["Failed"] != COLOURS["Success"]
    assert "Failed" in texts(top["breaks"])
    assert ("grind", "breaks") in edges(root)
    body = nodes(root, body=True)
    assert {"step", "enough"} <= set(body) and len(body) == 3  # the inner grind is in the body
    # Without a state nothing is coloured by state: every node has the "not run" colour.
    plain = nodes(parse(flow.visualize()), body=False)
    assert {_colour(n) for n in plain.values()} == {COLOURS[None]}

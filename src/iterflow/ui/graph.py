"""Flow graphs and iteration strips as SVG text, laid out on the server.

:func:`render` takes a :class:`FlowShape` — nodes (tasks, loop blocks with
their bodies, mapped tasks), edges, and optionally each node's state — and
returns SVG. The layout is layered (Sugiyama) by ``grandalf``; nothing about
it is hand-rolled but the drawing. It knows nothing of the store, so
``flow.visualize()``, ``iterflow visualize`` and the dashboard draw the
same picture: each builds a shape from a flow's description
(:func:`iterflow.core.shape.describe`, recorded with every run) with
:func:`shape_from_description`, adding states from a flow state or from the
store (:func:`shape_from_run`).

Edges join top-level nodes: an edge into a loop block's body is drawn into
the block, and edges between body tasks are drawn inside the frame. An edge
carrying data is labelled with its argument name; a mapped edge is dashed
and labelled "map". Structural classes make the SVG easy to read back:
``g.node[data-task]``, ``path.edge[data-from][data-to]``, ``path.loop-edge``
(a task's self-edge), ``path.back-edge`` (a block's), ``text.edge-label``.

How loops look: a looping task has a self-edge labelled with its iteration
count; a loop block is a framed node with its body inside, a back-edge and
"k iterations"; a mapped task is one node with its width and child counts
by state. Colours are presentation attributes (no ``style``), so the SVG
needs no stylesheet and passes a strict Content-Security-Policy. Every
label is escaped.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from html import escape
from typing import Any

TIMES = "\u00d7"  # the multiplication sign
__all__ = [
    "COLOURS",
    "FlowShape",
    "Node",
    "render",
    "run_states",
    "shape_from_description",
    "shape_from_run",
    "states_from_flow_state",
    "strip",
]

COLOURS = {
    "Success": "#2e9e5b", "Cached": "#2e9e5b", "Mapped": "#2e9e5b", "Looped": "#3b7dd8",
    "Running": "#3b7dd8", "Pending": "#9aa3ad", "Retrying": "#e0a030", "Skipped": "#9aa3ad",
    "Failed": "#d64545", "TriggerFailed": "#d64545", "TimedOut": "#d64545",
    "Crashed": "#d64545", "Cancelled": "#8a6d3b", None: "#c5ccd3",
}
_W, _H = 168, 46  # a task node
_GAP = 36
_PAD = 24


@dataclass
class Node:
    """One node: a task, a loop block (``body`` inside it) or a mapped task (``children``).

    ``loops`` is the iteration count (a self-edge or back-edge is drawn when
    it is over 1, or for any block); ``width`` and ``children`` describe a
    map whose children are known, ``mapped`` one that maps (width unknown).
    ``body_edges`` join the body's nodes of a block.
    """

    id: str
    label: str
    state: str | None = None
    loops: int | None = None
    block: bool = False
    body: list[Node] = field(default_factory=list)
    width: int = 0
    children: dict[str, int] = field(default_factory=dict)
    mapped: bool = False
    body_edges: list[tuple[str, str]] = field(default_factory=list)


@dataclass
class FlowShape:
    """Nodes and ``(from id, to id)`` edges of a flow (edges may be unknown: none).

    ``labels`` names what an edge carries (its argument, "map key" for a
    mapped edge); ``mapped`` holds the edges a task maps over.
    """

    nodes: list[Node]
    edges: list[tuple[str, str]] = field(default_factory=list)
    labels: dict[tuple[str, str], str] = field(default_factory=dict)
    mapped: set[tuple[str, str]] = field(default_factory=set)


#: What is known of one task's run: ``state`` (a state name), ``loops``,
#: ``width`` and ``children`` (counts by state) of a map.
Info = dict[str, Any]


def shape_from_description(description: dict[str, Any],
                           info: dict[str, Info] | None = None) -> FlowShape:
    """The :class:`FlowShape` of a flow's description, with what ``info`` says of each slug.

    >>> d = {"tasks": [{"slug": "a", "name": "a", "upstream": []},
    ...                {"slug": "b", "name": "b", "upstream": [{"from": "a", "key": "x"}]}]}
    >>> s = shape_from_description(d, {"b": {"state": "Success", "loops": 3}})
    >>> [n.id for n in s.nodes], s.edges, s.labels, s.nodes[1].loops
    (['a', 'b'], [('a', 'b')], {('a', 'b'): 'x'}, 3)
    """
    info = info or {}
    tasks = description.get("tasks", [])
    owner = {t["slug"]: t.get("block") for t in tasks}

    def top(slug: str) -> str:
        seen = 0
        while owner.get(slug) is not None and seen < 64:  # nesting is shallow; no cycle
            slug, seen = owner[slug], seen + 1
        return slug

    nodes: dict[str, Node] = {}
    for t in tasks:
        known = info.get(t["slug"], {})
        nodes[t["slug"]] = Node(
            t["slug"], t["name"], known.get("state"), loops=known.get("loops"),
            block=t.get("kind") == "block", width=known.get("width") or 0,
            children=dict(known.get("children") or {}), mapped=bool(t.get("mapped")),
        )
    shape = FlowShape([])
    for t in tasks:
        node = nodes[t["slug"]]
        home = t.get("block")
        if home is None:
            shape.nodes.append(node)
        elif home in nodes:
            nodes[home].body.append(node)
        for up in t.get("upstream", []):
            a = up["from"]
            if a not in nodes:
                continue
            if home is not None and owner.get(a) == home:
                nodes[home].body_edges.append((a, t["slug"]))
                continue
            edge = (top(a), top(t["slug"]))
            if edge[0] == edge[1]:
                continue  # a member ordering its block's end: the frame says it
            if edge not in shape.labels:
                shape.edges.append(edge)
                shape.labels[edge] = ""
            if up.get("mapped"):
                shape.mapped.add(edge)
            key = ("map " if up.get("mapped") else "") + (up.get("key") or "")
            if key.strip() and key not in shape.labels[edge].split(", "):
                shape.labels[edge] = ", ".join(filter(None, [shape.labels[edge], key]))
    return shape


def states_from_flow_state(flow: Any, flow_state: Any) -> dict[str, Info]:
    """``info`` for :func:`shape_from_description` from a finished run's state.

    ``flow_state.result`` maps each task to its final state (as ``flow.run()``
    returns it); a ``Mapped`` state gives its width and children's states.
    """
    result = getattr(flow_state, "result", None)
    if not isinstance(result, dict):
        return {}
    info: dict[str, Info] = {}
    for t, s in result.items():
        slug = getattr(t, "slug", None)
        if slug is None or not hasattr(s, "name"):
            continue
        known: Info = {"state": s.name, "loops": getattr(s, "loop_count", None)}
        children = getattr(s, "map_states", None)
        if children:
            counts: dict[str, int] = {}
            for c in children:
                counts[c.name] = counts.get(c.name, 0) + 1
            known.update(width=len(children), children=counts)
        info[slug] = known
    return info


def run_states(shape: Any, bodies: dict[str, list[Any]] | None = None) -> dict[str, Info]:
    """``info`` for :func:`shape_from_description` from a stored run's task runs."""
    info: dict[str, Info] = {}
    for g in shape.tasks:
        count = g.loop_count or ((g.loop_index or 0) + 1 if g.loop_index is not None else None)
        info[g.task_slug] = {"state": g.state, "loops": count, "width": g.width,
                             "children": dict(g.children)}
    for runs in (bodies or {}).values():
        for b in runs:
            info.setdefault(b.task_slug, {"state": b.state})
    return info


def shape_from_run(shape: Any, bodies: dict[str, list[Any]] | None = None) -> FlowShape:
    """A :class:`FlowShape` from :func:`iterflow.store.run_shape`'s answer.

    With the flow's description recorded with the run (``shape.graph``) the
    picture has every task and edge, coloured by what ran; a run recorded
    before descriptions were kept gets its task runs without edges.
    ``bodies`` maps a block's slug to its body's task runs of one iteration.
    """
    info = run_states(shape, bodies)
    description = getattr(shape, "graph", None)
    if description:
        return shape_from_description(description, info)
    nodes = []
    for g in shape.tasks:
        body = [Node(b.task_slug, b.task_name, b.state)
                for b in (bodies or {}).get(g.task_slug, [])]
        known = info[g.task_slug]
        nodes.append(Node(g.task_slug, g.task_name, g.state, loops=known["loops"],
                          block=g.is_block, body=body, width=g.width,
                          children=dict(g.children)))
    return FlowShape(nodes)


class _View:
    """What grandalf needs of a vertex: its size."""

    def __init__(self, w: float, h: float) -> None:
        self.w, self.h = w, h
        self.xy = (0.0, 0.0)


def _size(node: Node) -> tuple[float, float]:
    if node.block:
        inner = max(1, len(node.body))
        return max(_W + 40, inner * (_W + 16) + 24), _H + 76
    if node.width or node.mapped:
        return _W + 20, _H + 18
    return _W, _H


def _layout(shape: FlowShape) -> dict[str, tuple[float, float, float, float]]:
    """``id -> (x, y, w, h)`` (top-left corner), layered by grandalf per component."""
    from grandalf.graphs import Edge, Graph, Vertex
    from grandalf.layouts import SugiyamaLayout

    vertices = {n.id: Vertex(n.id) for n in shape.nodes}
    for n in shape.nodes:
        vertices[n.id].view = _View(*_size(n))
    edges = [Edge(vertices[a], vertices[b]) for a, b in shape.edges
             if a in vertices and b in vertices and a != b]
    graph = Graph(list(vertices.values()), edges)
    boxes: dict[str, tuple[float, float, float, float]] = {}
    x_offset = 0.0
    for component in graph.C:
        layout = SugiyamaLayout(component)
        layout.xspace, layout.yspace = _GAP, _GAP + 10
        layout.init_all()
        layout.draw()
        placed = [(v.data, v.view.xy[0] - v.view.w / 2, v.view.xy[1] - v.view.h / 2,
                   v.view.w, v.view.h) for v in component.sV]
        left = min(p[1] for p in placed)
        top = min(p[2] for p in placed)
        for vid, x, y, w, h in placed:
            boxes[vid] = (x - left + x_offset, y - top, w, h)
        x_offset += max(p[1] - left + p[3] for p in placed) + _GAP + 30
    return boxes


def _text(x: float, y: float, text: str, size: int = 12, anchor: str = "middle",
          fill: str = "#1d2733", weight: str = "normal") -> str:
    return (f'<text x="{x:.1f}" y="{y:.1f}" font-size="{size}" text-anchor="{anchor}" '
            f'font-family="sans-serif" font-weight="{weight}" fill="{fill}">{escape(text)}</text>')


def _box(x: float, y: float, w: float, h: float, node: Node) -> list[str]:
    colour = COLOURS.get(node.state, COLOURS[None])
    label = ("loop " if node.block else "") + node.label
    label = label if len(label) <= 22 else label[:21] + "…"
    out = [f'<rect x="{x:.1f}" y="{y:.1f}" width="{w:.1f}" height="{h:.1f}" rx="6" '
           f'fill="#ffffff" stroke="{colour}" stroke-width="2"/>',
           f'<rect x="{x:.1f}" y="{y:.1f}" width="6" height="{h:.1f}" rx="3" fill="{colour}"/>',
           _text(x + w / 2, y + 19, label, 13, weight="bold"),
           _text(x + w / 2, y + 36, node.state or "not run", 11, fill="#4a5663")]
    return out


def _node(node: Node, x: float, y: float, w: float, h: float) -> list[str]:
    out = [f'<g class="node" data-task="{escape(node.id)}"><title>{escape(node.label)}'
           f'{" — " + escape(node.state) if node.state else ""}</title>']
    if node.block:
        colour = COLOURS.get(node.state, COLOURS[None])
        out.append(f'<rect x="{x:.1f}" y="{y:.1f}" width="{w:.1f}" height="{h:.1f}" rx="10" '
                   f'fill="#f4f7fb" stroke="{colour}" stroke-width="2" stroke-dasharray="6 3"/>')
        out.append(_text(x + 12, y + 18, f"loop {node.label}", 13, "start", weight="bold"))
        inner_x = x + 12
        where: dict[str, float] = {}
        for b in node.body:
            out.append(f'<g class="node body" data-task="{escape(b.id)}">')
            out += _box(inner_x, y + 28, _W, _H, b)
            out.append("</g>")
            where[b.id] = inner_x
            inner_x += _W + 16
        out += _body_edges(node, where, y + 28)
        if not node.body:
            out.append(_text(x + w / 2, y + 52, "body", 11, fill="#4a5663"))
        # The back-edge: from the frame's right side over the top to its left.
        out.append(f'<path d="M {x + w:.1f} {y + h / 2:.1f} C {x + w + 30:.1f} {y + h / 2:.1f}, '
                   f'{x + w + 30:.1f} {y - 14:.1f}, {x + w / 2:.1f} {y - 14:.1f} '
                   f'C {x - 30:.1f} {y - 14:.1f}, {x - 30:.1f} {y + h / 2:.1f}, {x:.1f} '
                   f'{y + h / 2:.1f}" class="back-edge" fill="none" stroke="{colour}" '
                   f'stroke-width="1.5" marker-end="url(#arrow)"/>')
        count = node.loops or 0
        # Left of centre: an edge into the block arrives at the centre of its top.
        out.append(_text(x + 24, y - 18, f"{count:,} iteration{'s' if count != 1 else ''}",
                         12, "start", fill=colour, weight="bold"))
    else:
        out += _box(x, y, w, h if not (node.width or node.mapped) else _H, node)
        if node.width or node.mapped:
            # A stack of cards: one node for all its children.
            out.insert(1, f'<rect x="{x + 6:.1f}" y="{y + 6:.1f}" width="{w - 6:.1f}" '
                          f'height="{_H:.1f}" rx="6" fill="#eef1f4" stroke="#9aa3ad"/>')
            counts = ", ".join(f"{n:,} {s}" for s, n in sorted(node.children.items()))
            caption = (f"map {TIMES} {node.width:,}: {counts}"[:60] if node.width
                       else "mapped")
            out.append(_text(x + w / 2, y + _H + 14, caption, 11, fill="#4a5663"))
        if (node.loops or 0) > 1:
            colour = COLOURS.get(node.state, COLOURS[None])
            cx = x + w
            out.append(f'<path class="loop-edge" d="M {cx - 30:.1f} {y:.1f} C {cx - 30:.1f} '
                       f'{y - 30:.1f}, {cx + 26:.1f} {y - 30:.1f}, {cx:.1f} {y + 12:.1f}" '
                       f'fill="none" stroke="{colour}" stroke-width="1.5" '
                       f'marker-end="url(#arrow)"/>')
            out.append(_text(cx - 2, y - 24, f"{TIMES}{node.loops:,}", 12, "start", fill=colour,
                             weight="bold"))
    out.append("</g>")
    return out


def _body_edges(node: Node, where: dict[str, float], top: float) -> list[str]:
    """Arrows between a block's body tasks: across the gap to the next, else an arc below."""
    out = []
    for a, b in node.body_edges:
        if a not in where or b not in where:
            continue
        xa, xb = where[a], where[b]
        if xb == xa + _W + 16:
            d = f"M {xa + _W:.1f} {top + _H / 2:.1f} L {xb:.1f} {top + _H / 2:.1f}"
        else:
            # Below the row, deeper for longer spans, so arcs stay apart.
            depth = top + _H + 8 + min(abs(xb - xa) / (_W + 16), 4) * 6
            d = (f"M {xa + _W / 2:.1f} {top + _H:.1f} C {xa + _W / 2:.1f} {depth:.1f}, "
                 f"{xb + _W / 2:.1f} {depth:.1f}, {xb + _W / 2:.1f} {top + _H:.1f}")
        out.append(f'<path class="edge body-edge" data-from="{escape(a)}" data-to="{escape(b)}" '
                   f'd="{d}" stroke="#7b8794" fill="none" stroke-width="1.2" '
                   f'marker-end="url(#arrow)"/>')
    return out


def render(shape: FlowShape, *, standalone: bool = False) -> str:
    """The flow as SVG text: inline (for a page) or ``standalone`` (a file, with the XML header)."""
    if not shape.nodes:
        return '<svg xmlns="http://www.w3.org/2000/svg" width="10" height="10" role="img"></svg>'
    boxes = _layout(shape)
    parts: list[str] = []
    for a, b in shape.edges:
        if a in boxes and b in boxes and a != b:
            ax, ay, aw, ah = boxes[a]
            bx, by, bw, _bh = boxes[b]
            x1, y1 = ax + aw / 2 + _PAD, ay + ah + _PAD + 30
            x2, y2 = bx + bw / 2 + _PAD, by + _PAD + 30
            dash = ' stroke-dasharray="5 3"' if (a, b) in shape.mapped else ""
            parts.append(f'<path class="edge" data-from="{escape(a)}" data-to="{escape(b)}" '
                         f'd="M {x1:.1f} {y1:.1f} L {x2:.1f} {y2:.1f}" stroke="#7b8794" '
                         f'fill="none" stroke-width="1.5"{dash} marker-end="url(#arrow)"/>')
            label = shape.labels.get((a, b))
            if label:
                text = _text((x1 + x2) / 2 + 4, (y1 + y2) / 2 + 4, label[:40], 10, "start",
                             fill="#4a5663")
                parts.append(text.replace("<text ", '<text class="edge-label" ', 1))
    for n in shape.nodes:
        x, y, w, h = boxes[n.id]
        parts += _node(n, x + _PAD, y + _PAD + 30, w, h)
    width = max(x + w for x, _y, w, _h in boxes.values()) + 2 * _PAD + 30
    height = max(y + h for _x, y, _w, h in boxes.values()) + 2 * _PAD + 50
    head = '<?xml version="1.0" encoding="UTF-8"?>\n' if standalone else ""
    return (
        f'{head}<svg xmlns="http://www.w3.org/2000/svg" class="flow-graph" width="{width:.0f}" '
        f'height="{height:.0f}" viewBox="0 0 {width:.0f} {height:.0f}" role="img" '
        f'aria-label="flow graph"><defs><marker id="arrow" viewBox="0 0 10 10" refX="9" '
        f'refY="5" markerWidth="7" markerHeight="7" orient="auto-start-reverse">'
        f'<path d="M 0 0 L 10 5 L 0 10 z" fill="#7b8794"/></marker></defs>'
        + "".join(parts) + "</svg>"
    )


def strip(buckets: list[Any], width: int = 600, height: int = 48) -> str:
    """Every iteration's duration (bar height, square-root scale) and state, as SVG.

    One bar per bucket (:class:`~iterflow.store.StripBucket`): its height
    the slowest attempt in it, a dark tick its mean; a red mark along the top
    of a bucket holding a failed attempt. Four elements whatever the number
    of iterations, so the browser draws it at once.
    """
    if not buckets:
        return (f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}">'
                f'</svg>')
    top = max(b.max_duration for b in buckets) or 1.0
    step = width / len(buckets)
    bars, bad, mean = [], [], []
    room = height - 8  # the top 6 px hold the failure marks
    for n, b in enumerate(buckets):
        x = n * step
        w = max(step - 0.3, 0.7)
        h = max(1.5, (b.max_duration / top) ** 0.5 * room)
        m = max(1.0, (b.mean_duration / top) ** 0.5 * room)
        bars.append(f"M{x:.2f} {height}v{-h:.2f}h{w:.2f}v{h:.2f}z")
        mean.append(f"M{x:.2f} {height - m:.2f}h{w:.2f}")
        if b.failed:
            bad.append(f"M{x:.2f} 0h{max(w, 1.5):.2f}v6h{-max(w, 1.5):.2f}z")
    return (
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
        f'viewBox="0 0 {width} {height}" preserveAspectRatio="none">'
        f'<rect width="{width}" height="{height}" fill="#f4f7fb"/>'
        f'<path d="{"".join(bars)}" fill="#8fb4e8"/>'
        f'<path d="{"".join(mean)}" stroke="#1f4f96" stroke-width="1" fill="none"/>'
        f'<path d="{"".join(bad)}" fill="#d64545"/></svg>'
    )

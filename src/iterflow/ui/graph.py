"""Flow graphs and iteration strips as SVG text, laid out on the server.

:func:`render` takes a :class:`FlowShape` — nodes (tasks, loop blocks with
their bodies, mapped tasks), edges, and optionally each node's state — and
returns SVG. The layout is layered (Sugiyama) by ``grandalf``; nothing about
it is hand-rolled but the drawing. It knows nothing of the store, so
``flow.visualize()`` can describe a flow's shape and reuse it; the
dashboard builds the shape from a run (:func:`shape_from_run`).

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
__all__ = ["COLOURS", "FlowShape", "Node", "render", "shape_from_run", "strip"]

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
    map.
    """

    id: str
    label: str
    state: str | None = None
    loops: int | None = None
    block: bool = False
    body: list[Node] = field(default_factory=list)
    width: int = 0
    children: dict[str, int] = field(default_factory=dict)


@dataclass
class FlowShape:
    """Nodes and ``(from id, to id)`` edges of a flow (edges may be unknown: none)."""

    nodes: list[Node]
    edges: list[tuple[str, str]] = field(default_factory=list)


def shape_from_run(shape: Any, bodies: dict[str, list[Any]] | None = None) -> FlowShape:
    """A :class:`FlowShape` from :func:`iterflow.store.run_shape`'s answer.

    The store records which tasks ran, not how they connect, so the nodes
    come without edges; ``bodies`` maps a block's slug to its body's task
    runs of one iteration.
    """
    nodes = []
    for g in shape.tasks:
        count = g.loop_count or ((g.loop_index or 0) + 1 if g.loop_index is not None else None)
        body = [Node(b.task_slug, b.task_name, b.state)
                for b in (bodies or {}).get(g.task_slug, [])]
        nodes.append(Node(g.task_slug, g.task_name, g.state, loops=count, block=g.is_block,
                          body=body, width=g.width, children=dict(g.children)))
    return FlowShape(nodes)


class _View:
    """What grandalf needs of a vertex: its size."""

    def __init__(self, w: float, h: float) -> None:
        self.w, self.h = w, h
        self.xy = (0.0, 0.0)


def _size(node: Node) -> tuple[float, float]:
    if node.block:
        inner = max(1, len(node.body))
        return max(_W + 40, inner * (_W + 16) + 24), _H + 64
    if node.width:
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
    label = node.label if len(node.label) <= 22 else node.label[:21] + "…"
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
        for b in node.body:
            out += _box(inner_x, y + 28, _W, _H, b)
            inner_x += _W + 16
        if not node.body:
            out.append(_text(x + w / 2, y + 52, "body", 11, fill="#4a5663"))
        # The back-edge: from the frame's right side over the top to its left.
        out.append(f'<path d="M {x + w:.1f} {y + h / 2:.1f} C {x + w + 30:.1f} {y + h / 2:.1f}, '
                   f'{x + w + 30:.1f} {y - 14:.1f}, {x + w / 2:.1f} {y - 14:.1f} '
                   f'C {x - 30:.1f} {y - 14:.1f}, {x - 30:.1f} {y + h / 2:.1f}, {x:.1f} '
                   f'{y + h / 2:.1f}" fill="none" stroke="{colour}" stroke-width="1.5" '
                   f'marker-end="url(#arrow)"/>')
        count = node.loops or 0
        out.append(_text(x + w / 2, y - 18, f"{count:,} iteration{'s' if count != 1 else ''}",
                         12, fill=colour, weight="bold"))
    else:
        out += _box(x, y, w, h if not node.width else _H, node)
        if node.width:
            # A stack of cards: one node for all its children.
            out.insert(1, f'<rect x="{x + 6:.1f}" y="{y + 6:.1f}" width="{w - 6:.1f}" '
                          f'height="{_H:.1f}" rx="6" fill="#eef1f4" stroke="#9aa3ad"/>')
            counts = ", ".join(f"{n:,} {s}" for s, n in sorted(node.children.items()))
            caption = f"map {TIMES} {node.width:,}: {counts}"[:60]
            out.append(_text(x + w / 2, y + _H + 14, caption, 11, fill="#4a5663"))
        if (node.loops or 0) > 1:
            colour = COLOURS.get(node.state, COLOURS[None])
            cx = x + w
            out.append(f'<path d="M {cx - 30:.1f} {y:.1f} C {cx - 30:.1f} {y - 30:.1f}, '
                       f'{cx + 26:.1f} {y - 30:.1f}, {cx:.1f} {y + 12:.1f}" fill="none" '
                       f'stroke="{colour}" stroke-width="1.5" marker-end="url(#arrow)"/>')
            out.append(_text(cx - 2, y - 24, f"{TIMES}{node.loops:,}", 12, "start", fill=colour,
                             weight="bold"))
    out.append("</g>")
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
            parts.append(f'<path d="M {ax + aw / 2 + _PAD:.1f} {ay + ah + _PAD + 30:.1f} L '
                         f'{bx + bw / 2 + _PAD:.1f} {by + _PAD + 30:.1f}" stroke="#7b8794" '
                         f'fill="none" stroke-width="1.5" marker-end="url(#arrow)"/>')
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

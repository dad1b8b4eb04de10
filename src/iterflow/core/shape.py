"""A flow's shape as plain data: what a picture of the flow needs, and nothing else.

:func:`describe` turns a :class:`~iterflow.core.flow.Flow` into a JSON-ready
dict. The runner sends it with a run's first event, the store keeps it with
the run, and the one renderer (:mod:`iterflow.ui.graph`) draws it — for
``flow.visualize()`` from the flow in memory, for the dashboard and
``iterflow visualize --run`` from the store — so every picture of a flow is
the same picture.

The layout (``"version": 1``)::

    {"version": 1, "tasks": [
        {"slug": "fetch", "name": "fetch", "kind": "task",
         "upstream": [{"from": "pages", "key": "page", "mapped": true}],
         "mapped": true},
        {"slug": "epochs", "name": "epochs", "kind": "block", "upstream": []},
        {"slug": "train", "name": "train", "kind": "task", "block": "epochs",
         "upstream": [...]},
    ]}

Tasks come in dependency order. ``kind`` is ``"task"``, ``"parameter"`` or
``"block"`` (a loop block's node); ``block`` names the loop block a task is
a direct member of (absent: the flow itself). The placeholders a block
supplies to its body (``it.result``, ``it.index``) are left out: they are
never run, and the block's frame and back-edge already say what they mean.

>>> from iterflow import Flow, task
>>> @task
... def one():
...     return 1
>>> @task
... def inc(x):
...     return x + 1
>>> with Flow("f") as flow:
...     y = inc(one())
>>> [(t["slug"], [u["from"] for u in t["upstream"]]) for t in describe(flow)["tasks"]]
[('one', []), ('inc', ['one'])]
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from iterflow.core.flow import Flow

__all__ = ["SHAPE_VERSION", "describe"]

#: Bumped when the layout changes in a way an older reader would misdraw.
SHAPE_VERSION = 1


def describe(flow: Flow) -> dict[str, Any]:
    """The flow's tasks, their edges and loop-block membership, as a JSON-ready dict."""
    from iterflow.core.block import LoopBlock
    from iterflow.core.parameter import Parameter

    order = flow.sorted_tasks()
    upstream_of, _ = flow.edge_lists()  # read only: upstream_edges() copies a list per call
    owner: dict[Any, str] = {}
    for t in order:
        if isinstance(t, LoopBlock):
            for member in t.members:
                owner[member] = t.slug  # type: ignore[assignment]
    tasks: list[dict[str, Any]] = []
    for t in order:
        if getattr(t, "supplied_by_engine", False):
            continue
        kind = "block" if isinstance(t, LoopBlock) else (
            "parameter" if isinstance(t, Parameter) else "task")
        entry: dict[str, Any] = {"slug": t.slug, "name": t.name, "kind": kind}
        block = owner.get(t)
        if block is not None:
            entry["block"] = block
        upstream: list[dict[str, Any]] = []
        entry["upstream"] = upstream
        mapped = False
        for edge in upstream_of.get(t, ()):
            up = edge.upstream_task
            if getattr(up, "supplied_by_engine", False):
                continue
            item: dict[str, Any] = {"from": up.slug}
            if edge.key is not None:
                item["key"] = edge.key
            if edge.mapped:
                item["mapped"] = mapped = True
            upstream.append(item)
        if mapped:
            entry["mapped"] = True
        tasks.append(entry)
    return {"version": SHAPE_VERSION, "tasks": tasks}

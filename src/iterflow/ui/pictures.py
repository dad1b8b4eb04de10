"""Pictures of flows and runs: the one path from a flow or a stored run to SVG.

``flow.visualize()``, ``iterflow visualize`` and the dashboard all come
here, so they draw the same graph with the same renderer
(:mod:`iterflow.ui.graph`). Nothing here needs the dashboard's web stack:
only ``grandalf`` (a core dependency) and, for a run, the store's readers.

>>> from iterflow import Flow, task
>>> @task
... def one():
...     return 1
>>> with Flow("f") as flow:
...     _ = one()
>>> "<svg" in flow_svg(flow)
True
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from iterflow.ui import graph

if TYPE_CHECKING:
    from iterflow.store import RunStore

__all__ = ["flow_svg", "run_info", "run_picture"]


def run_info(store: RunStore, shape: Any) -> tuple[dict[str, list[Any]], dict[str, Any]]:
    """A stored run's block bodies (their first iteration) and each slug's state and counts."""
    from iterflow.store import iteration_detail

    bodies = {
        g.task_slug: iteration_detail(store, g.task_run_id, g.key, 0)["body"]
        for g in shape.tasks if g.is_block
    }
    return bodies, graph.run_states(shape, bodies)


def run_picture(store: RunStore, shape: Any) -> graph.FlowShape:
    """The graph of a stored run (:func:`iterflow.store.run_shape`'s answer)."""
    bodies, _info = run_info(store, shape)
    return graph.shape_from_run(shape, bodies)


def flow_svg(flow: Any, flow_state: Any = None, *, run: str | None = None,
             store: RunStore | str | None = None, standalone: bool = True) -> str:
    """SVG of ``flow``, coloured by ``flow_state`` (a finished run's state) or by stored ``run``."""
    from iterflow.core.shape import describe

    description = describe(flow)
    info: dict[str, Any] = {}
    if flow_state is not None:
        info = graph.states_from_flow_state(flow, flow_state)
    elif run is not None:
        from iterflow.store import open_store, run_shape

        opened = store is None or isinstance(store, str)
        st = open_store(store) if opened else store  # type: ignore[arg-type]
        try:
            _bodies, info = run_info(st, run_shape(st, run))  # type: ignore[arg-type]
        finally:
            if opened:
                st.close()  # type: ignore[union-attr]
    return graph.render(graph.shape_from_description(description, info), standalone=standalone)

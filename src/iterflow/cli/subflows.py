"""What ``iterflow runs`` and ``iterflow show`` say about child runs (subflows).

``runs`` leaves child runs out unless ``--all``; ``show`` names a child's
parent and lists a run's children under the task run that started each one.
The store's side is :mod:`iterflow.store.children`.
"""

from __future__ import annotations

from typing import Any

from iterflow.cli.common import format_time, json_row, short_id, state_style

__all__ = ["print_children", "print_parent", "read_links"]


def read_links(
    store: Any, run_id: str, task_runs: list[dict[str, Any]] | None = None
) -> tuple[dict[str, Any] | None, list[dict[str, Any]]]:
    """``(parent link or None, child runs)`` of a run, as plain dicts.

    Each of ``task_runs`` that started a child run gets its id as ``child_run_id``.
    """
    from iterflow.store.children import child_runs, parent_of

    parent = parent_of(run_id, store=store)
    children = [c.as_dict() for c in child_runs(run_id, store=store)]
    started = {c["parent_task_run_id"]: c["run_id"] for c in children}
    for task_run in task_runs or ():
        child = started.get(task_run.get("task_run_id"))
        if child is not None:
            task_run["child_run_id"] = child
    return (None if parent is None else parent.as_dict()), children


def json_links(parent: dict[str, Any] | None, children: list[dict[str, Any]]) -> dict[str, Any]:
    """The keys ``show --json`` adds: ``parent_run_id`` and ``parent`` (the whole link),
    None for a top-level run, and ``child_runs``."""
    return {
        "parent_run_id": None if parent is None else parent["parent_run_id"],
        "parent": parent,
        "child_runs": [json_row(c) for c in children],
    }


def print_parent(console: Any, parent: dict[str, Any] | None) -> None:
    """One line under a child run's facts: which run and task started it."""
    if parent is None:
        return
    where = [f"task {parent['task_slug']}"] if parent.get("task_slug") else []
    for key, label in (("map_index", "map"), ("block_index", "block"), ("loop_index", "loop")):
        if parent.get(key) is not None:
            where.append(f"{label} {parent[key]}")
    console.print(
        f"Child run of {parent['parent_run_id']} ({', '.join(where)}); "
        f"`iterflow show {short_id(parent['parent_run_id'])}` shows the parent.",
        style="dim",
    )


def print_children(console: Any, children: list[dict[str, Any]]) -> None:
    """A table of the run's child runs, grouped under the task that started them."""
    if not children:
        return
    from rich.table import Table
    from rich.text import Text

    table = Table(box=None, header_style="bold", pad_edge=False, title="Child runs",
                  title_justify="left", title_style="bold")
    table.add_column("task")
    table.add_column("map", justify="right", no_wrap=True)
    table.add_column("block", justify="right", no_wrap=True)
    table.add_column("run", no_wrap=True)
    table.add_column("flow")
    table.add_column("state", no_wrap=True)
    table.add_column("started", no_wrap=True)
    # Grouped by the starting task, in the order each task first started a child.
    order: dict[str, list[dict[str, Any]]] = {}
    for child in children:
        order.setdefault(child.get("task_slug") or "", []).append(child)
    for slug, group in order.items():
        for n, child in enumerate(group):
            state = child.get("state")
            table.add_row(
                slug if n == 0 else "",
                "" if child.get("map_index") is None else str(child["map_index"]),
                "" if child.get("block_index") is None else str(child["block_index"]),
                short_id(child["run_id"]),
                child.get("flow_name") or "",
                Text(str(state), style=state_style(state)),
                format_time(child.get("started")),
            )
    console.print()
    console.print(table)

"""``iterflow show RUN --metrics``: the numbers a run's tasks logged, per metric.

One row per task and metric name (``iterflow.log_metric``): how many values
were logged and the first, last, least and greatest. ``--json`` prints the run
object with a ``metrics`` list of the same fields.
"""

from __future__ import annotations

from typing import Any

import click

from iterflow.cli.common import json_row, json_text, short_id

__all__ = ["show_metrics"]


def _number(value: float) -> str:
    return f"{value:.6g}"


def show_metrics(store: Any, run: dict[str, Any], task: str | None, *, as_json: bool) -> None:
    """Print the summary of each metric of ``run`` (one task's with ``task``)."""
    from iterflow.store import metric_summary

    rows = [s.as_dict() for s in metric_summary(run["run_id"], task, store=store)]
    if as_json:
        click.echo(json_text({**json_row(run), "metrics": rows}))
        return
    from rich.console import Console
    from rich.table import Table
    from rich.text import Text

    console = Console(highlight=False)
    if not rows:
        which = f" by task {task!r}" if task else ""
        console.print(Text(
            f"No metrics logged{which} in run {short_id(run['run_id'])} "
            f"(tasks log them with iterflow.log_metric(name, value)).", style="dim",
        ))
        return
    table = Table(box=None, header_style="bold", pad_edge=False)
    table.add_column("task")
    table.add_column("metric")
    for column in ("count", "first", "last", "min", "max"):
        table.add_column(column, justify="right", no_wrap=True)
    for row in rows:
        table.add_row(
            Text(row["task_name"] or ""), Text(row["name"]), str(row["count"]),
            *(_number(row[key]) for key in ("first", "last", "min", "max")),
        )
    console.print(table)

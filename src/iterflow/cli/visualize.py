"""``iterflow visualize FILE[:FLOW] [-o OUT] [--run RUN]``: a flow's graph as SVG.

The same picture as ``flow.visualize()`` and the dashboard draw (one
renderer, :mod:`iterflow.ui.graph`): with ``--run`` the tasks are coloured
by that recorded run's states, loops labelled with their counts and mapped
tasks with their width. Without ``-o`` the SVG goes to standard output.
"""

from __future__ import annotations

from pathlib import Path

import click

from iterflow.cli.common import EXIT_USAGE, CliError, debug_option, resolve_run, store_session

__all__ = ["visualize_command"]


@click.command("visualize")
@click.argument("target", metavar="FILE[:FLOW]")
@click.option("-o", "--output", "output", default=None, metavar="OUT",
              help="Write the SVG to this file (default: standard output).")
@click.option("--run", "run_ref", default=None, metavar="RUN",
              help="Colour the graph by this recorded run (an id or a unique prefix).")
@debug_option
def visualize_command(target: str, output: str | None, run_ref: str | None) -> None:
    """Draw a flow's graph as SVG: tasks, edges, loops, loop blocks, maps.

    \b
    Examples:
      iterflow visualize flows.py -o flow.svg
      iterflow visualize flows.py:training --run 3f9a -o run.svg
    """
    from iterflow.cli.run import load_flow
    from iterflow.ui.pictures import flow_svg

    loaded = load_flow(target)
    if run_ref is None:
        svg = flow_svg(loaded.flow)
    else:
        with store_session(read_only=None) as store:
            run = resolve_run(store, run_ref)
            if run["flow_name"] != loaded.flow.name:
                raise CliError(
                    f"run {run['run_id']} is a run of flow {run['flow_name']!r}, not of "
                    f"{loaded.flow.name!r} from {target}",
                    "give the file that defines the run's flow, or a run of this flow "
                    "(iterflow runs lists them)", EXIT_USAGE,
                )
            svg = flow_svg(loaded.flow, run=run["run_id"], store=store)
    if output is None:
        click.echo(svg)
        return
    try:
        Path(output).write_text(svg, encoding="utf-8")
    except OSError as exc:
        raise CliError(f"cannot write {output}: {exc}", "choose a writable path for -o") from exc
    click.echo(f"wrote {output}", err=True)

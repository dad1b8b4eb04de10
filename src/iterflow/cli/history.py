"""``iterflow runs`` and ``iterflow show``: what the run store knows about past runs.

Both read the store through its queries (:mod:`iterflow.store.queries`), never
unpickling a result: tables show the stored previews. ``--json`` prints the
shapes DESIGN §9 promises — ``runs``: a list of run objects; ``show``: one
run object with its ``task_runs`` — with every field the store gives, times
as ISO 8601 (UTC) and ``duration`` in seconds.
"""

from __future__ import annotations

import time
from datetime import datetime
from typing import Any

import click

from iterflow.cli.common import (
    EXIT_USAGE,
    CliError,
    debug_option,
    duration,
    format_time,
    iso_time,
    json_row,
    json_text,
    resolve_run,
    short_id,
    state_style,
    store_session,
)
from iterflow.cli.subflows import json_links, print_children, print_parent, read_links

__all__ = ["runs_command", "show_command"]

#: States ``--state`` accepts (flow-run states, and Crashed for a dead live run).
RUN_STATES = ("Running", "Pending", "Success", "Failed", "Cancelled", "Crashed")


def _print_json(value: Any) -> None:
    click.echo(json_text(value))


def _elapsed(row: dict[str, Any]) -> float | None:
    """A run's duration; for a run still going, how long it has been going."""
    seconds = duration(row)
    if seconds is None and row.get("started") and row.get("state") in ("Running", "Pending"):
        seconds = max(time.time() - float(row["started"]), 0.0)
    return seconds


@click.command("runs")
@click.option("-n", "--limit", default=20, show_default=True, type=click.IntRange(min=1),
              help="Show at most this many runs, newest first.")
@click.option("--flow", "flow_name", metavar="NAME", help="Only runs of the flow with this name.")
@click.option("--state", type=click.Choice(RUN_STATES, case_sensitive=False),
              help="Only runs in this state.")
@click.option("--json", "as_json", is_flag=True, help="Print a JSON list instead of a table.")
@click.option("--all", "show_all", is_flag=True,
              help="Also list child runs (subflows), which `iterflow show PARENT` lists.")
@debug_option
def runs_command(limit: int, flow_name: str | None, state: str | None, as_json: bool,
                 show_all: bool) -> None:
    """List recorded runs, newest first.

    A run whose process died (or whose heartbeat stopped) shows as Crashed;
    `iterflow resume RUN` continues it. Child runs of subflows are left out
    unless --all.
    """
    from iterflow.store.children import list_runs, parents_of

    with store_session(read_only=None) as store:
        rows = [r.as_dict() for r in list_runs(limit, flow_name, state,
                                               include_children=show_all, store=store)]
        links = parents_of([r["run_id"] for r in rows], store=store) if show_all else {}
        store_name = store.name
        _add_triggers(store, rows)
    for row in rows:  # None for a top-level run
        link = links.get(row["run_id"])
        row["parent_run_id"] = None if link is None else link.parent_run_id
    if as_json:
        _print_json([json_row(r) for r in rows])
        return
    from rich.console import Console
    from rich.table import Table
    from rich.text import Text

    from iterflow.progress import format_duration

    console = Console(highlight=False)
    if not rows:
        what = " matching these filters" if (flow_name or state) else ""
        console.print(Text(f"No runs{what} in {store_name}.", style="dim"))
        return
    table = Table(box=None, header_style="bold", pad_edge=False)
    table.add_column("run", no_wrap=True)
    table.add_column("flow")
    table.add_column("state", no_wrap=True)
    table.add_column("started", no_wrap=True)
    table.add_column("duration", justify="right", no_wrap=True)
    table.add_column("trigger")
    for row in rows:
        table.add_row(
            short_id(row["run_id"]),
            Text(row.get("flow_name") or ""),  # a name is text, never markup
            Text(str(row.get("state")), style=state_style(row.get("state"))),
            format_time(row.get("started")),
            format_duration(_elapsed(row)),
            _trigger_text(row["trigger"]),
        )
    console.print(table)


def _add_triggers(store: Any, rows: list[dict[str, Any]]) -> None:
    """Give each run its ``trigger``: manual, schedule (name, time) or resume."""
    from iterflow.store import triggers

    found = triggers([r["run_id"] for r in rows], store=store)
    for row in rows:
        trigger = found[row["run_id"]].as_dict()
        trigger["scheduled"] = iso_time(trigger["scheduled"])
        row["trigger"] = trigger


def _trigger_text(trigger: dict[str, Any]) -> str:
    if trigger["kind"] == "schedule":
        when = trigger["scheduled"] or ""
        text = f"{trigger['schedule']} @ {when[:19].replace('T', ' ')}Z"
    else:
        text = trigger["kind"]
    if trigger["resumes"] and trigger["kind"] != "resume":
        text += ", resumed"
    return text


@click.command("show")
@click.argument("run_ref", metavar="RUN")
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of tables.")
@click.option("--iterations", "iterations_of", metavar="TASK",
              help="List one task run's recorded iterations (by task name, slug or task run "
                   "name), with result previews: the first and last ones, or a page with "
                   "--offset/--limit.")
@click.option("--map-index", type=int, metavar="N",
              help="With --iterations: the mapped child to show.")
@click.option("--offset", type=click.IntRange(min=0), default=0, metavar="K",
              help="With --iterations: skip the first K recorded states.")
@click.option("--limit", type=click.IntRange(min=0), metavar="N",
              help="With --iterations: show at most N states (with --json: all by default).")
@click.option("--all", "show_all", is_flag=True,
              help="List the task runs of every loop-block iteration, not only the latest.")
@click.option("--metrics", "show_metrics", is_flag=True,
              help="Summarize the metrics the run's tasks logged (count, first, last, min, "
                   "max); with --iterations TASK, only that task's.")
@debug_option
def show_command(
    run_ref: str, as_json: bool, iterations_of: str | None, map_index: int | None,
    offset: int, limit: int | None, show_all: bool, show_metrics: bool,
) -> None:
    """Show one run: its state and every task run's state, duration and iterations.

    A task inside a loop block runs once per block iteration; the table shows
    its latest run (--all: every one). RUN is a run id or a unique prefix of one.
    """
    if iterations_of is None and (offset or limit is not None):
        raise CliError("--offset and --limit go with --iterations TASK", exit_code=EXIT_USAGE)
    with store_session(read_only=None) as store:
        run = resolve_run(store, run_ref)
        if show_metrics:
            from iterflow.cli.metrics import show_metrics as print_metrics

            print_metrics(store, run, iterations_of, as_json=as_json)
            return
        if iterations_of is not None:
            from iterflow.cli.iterations import show_iterations

            # Inside the session: the records are read from the store as they are shown.
            show_iterations(store, run, iterations_of, map_index, as_json=as_json,
                            offset=offset, limit=limit)
            return
        task_runs = [r.as_dict() for r in store.task_runs(run["run_id"])]
        parent, children = read_links(store, run["run_id"], task_runs)
        if run.get("state") == "Running":
            from iterflow.store.sleeps import sleeping_until

            # A task run waiting in iterflow.sleep: say until when.
            asleep = sleeping_until(store, run["run_id"])
            for task_run in task_runs:
                wake = asleep.get(task_run["task_run_id"])
                if wake is not None and wake > time.time():
                    task_run["sleeping_until"] = wake
    if as_json:
        _print_json({**json_row(run), "task_runs": [json_row(t) for t in task_runs],
                     **json_links(parent, children)})
        return
    _print_run(run, task_runs, show_all, parent, children)


def fold_block_runs(task_runs: list[dict[str, Any]]) -> tuple[list[dict[str, Any]], int]:
    """One row per task inside loop blocks: its latest run, with how many it had.

    Returns the rows, in the order each task first appears, each row of a
    block task with ``block_runs`` (its task runs recorded); and how many rows
    were folded away.
    """
    latest: dict[tuple[str, int | None], dict[str, Any]] = {}
    counts: dict[tuple[str, int | None], int] = {}
    order: list[Any] = []
    for task_run in task_runs:
        if task_run.get("block_index") is None:
            order.append(task_run)
            continue
        key = (task_run["task_slug"], task_run.get("map_index"))
        if key not in latest:
            order.append(key)
        counts[key] = counts.get(key, 0) + 1
        shown = latest.get(key)
        if shown is None or (task_run.get("started") or 0) >= (shown.get("started") or 0):
            latest[key] = task_run
    rows = [
        item if isinstance(item, dict) else {**latest[item], "block_runs": counts[item]}
        for item in order
    ]
    return rows, len(task_runs) - len(rows)


#: A mapped task with more children than this shows as one line (and its failed children).
FOLD_CHILDREN = 10
_BAD = frozenset({"Failed", "TriggerFailed", "TimedOut", "Cancelled"})


def fold_mapped_children(
    task_runs: list[dict[str, Any]], limit: int = FOLD_CHILDREN
) -> tuple[list[dict[str, Any]], int]:
    """A big map's children as one line on its parent, plus the children that went wrong.

    The parent's row gets ``children`` (a count per state, most common first);
    at most ``limit`` failed children stay as rows of their own. Returns the
    rows and how many were folded away.
    """
    children: dict[tuple[str, int | None], list[dict[str, Any]]] = {}
    parents = set()
    for task_run in task_runs:
        key = (task_run["task_slug"], task_run.get("block_index"))
        if task_run.get("map_index") is not None:
            children.setdefault(key, []).append(task_run)
        else:
            parents.add(key)
    # Only under a parent's row (a run that crashed mid-map may not have recorded it).
    big = {key for key, kids in children.items() if len(kids) > limit and key in parents}
    if not big:
        return task_runs, 0
    rows: list[dict[str, Any]] = []
    for task_run in task_runs:
        key = (task_run["task_slug"], task_run.get("block_index"))
        if key not in big:
            rows.append(task_run)
        elif task_run.get("map_index") is None:  # the parent: the summary goes here
            kids = children[key]
            tally: dict[str, int] = {}
            for kid in kids:
                tally[kid.get("state") or "?"] = tally.get(kid.get("state") or "?", 0) + 1
            rows.append({**task_run, "children": sorted(tally.items(), key=lambda kv: -kv[1])})
            rows.extend([kid for kid in kids if kid.get("state") in _BAD][:limit])
    return rows, len(task_runs) - len(rows)


def _print_run(run: dict[str, Any], task_runs: list[dict[str, Any]], show_all: bool,
               parent: dict[str, Any] | None = None,
               children: list[dict[str, Any]] | None = None) -> None:
    from rich.console import Console
    from rich.table import Table
    from rich.text import Text

    from iterflow.progress import format_duration, quoted

    console = Console(highlight=False)
    state = run.get("state")
    console.print(Text.assemble("Run ", (run["run_id"], "bold"), " of flow ",
                                (quoted(run.get("flow_name") or ""), "bold")))
    facts = Table.grid(padding=(0, 2))
    facts.add_column(style="dim")
    facts.add_column()
    facts.add_row("state", Text(str(state), style=state_style(state)))
    facts.add_row("started", format_time(run.get("started")))
    if run.get("ended") is not None:
        facts.add_row("ended", f"{format_time(run['ended'])} "
                               f"({format_duration(duration(run))})")
    elif state == "Crashed" and run.get("pid"):
        facts.add_row("process", Text(f"{run['pid']} on {run.get('host')} (gone)"))
    if run.get("parameters"):
        facts.add_row("parameters", Text(json_text(run["parameters"], indent=None)))
    if run.get("source"):
        facts.add_row("source", Text(run["source"]))
    if run.get("message") and state in ("Failed", "Cancelled"):
        facts.add_row("message", Text(run["message"]))
    console.print(facts)
    print_parent(console, parent)
    if state in ("Failed", "Cancelled", "Crashed"):
        console.print(f"Continue it with `iterflow resume {short_id(run['run_id'])}`.",
                      style="dim")
    console.print()
    if not task_runs:
        console.print("No task runs recorded.", style="dim")
        return
    folded_runs = folded_children = 0
    if not show_all:
        task_runs, folded_runs = fold_block_runs(task_runs)
        task_runs, folded_children = fold_mapped_children(task_runs)
    in_blocks = any(t.get("block_index") is not None for t in task_runs)
    table = Table(box=None, header_style="bold", pad_edge=False)
    table.add_column("task")
    table.add_column("map", justify="right", no_wrap=True)
    if in_blocks:
        table.add_column("block", justify="right", no_wrap=True)
    table.add_column("state", no_wrap=True)
    table.add_column("iterations", justify="right", no_wrap=True)
    table.add_column("started", no_wrap=True)
    table.add_column("duration", justify="right", no_wrap=True)
    # The result's preview when the task run ended well, else why it did not.
    table.add_column("outcome", overflow="fold")
    for task_run in task_runs:
        task_state = task_run.get("state")
        failed = task_state in ("Failed", "TriggerFailed", "TimedOut", "Cancelled")
        note = task_run.get("message") if failed or not task_run.get("result_preview") else (
            task_run.get("result_preview"))
        if task_run.get("sleeping_until"):
            clock = datetime.fromtimestamp(task_run["sleeping_until"]).strftime("%H:%M")
            note = f"sleeping until {clock}"
        if task_run.get("children"):  # a big map, folded: what its children came to
            total = sum(n for _, n in task_run["children"])
            note = f"{total} children: " + ", ".join(
                f"{n} {kind}" for kind, n in task_run["children"]
            )
        map_index = task_run.get("map_index")
        block: list[str] = []
        if in_blocks:
            k = task_run.get("block_index")
            runs = task_run.get("block_runs")
            block = ["" if k is None else f"{k}/{runs}" if runs else str(k)]
        table.add_row(
            _task_cell(task_run),
            "" if map_index is None else str(map_index),
            *block,
            Text(str(task_state), style=state_style(task_state)),
            "" if task_run.get("loop_count") is None else str(task_run["loop_count"]),
            format_time(task_run.get("started")),
            format_duration(duration(task_run)),
            Text(note or "", style="red" if failed else "dim"),
        )
    console.print(table)
    print_children(console, children or [])
    what = []
    if folded_runs:
        what.append("tasks inside loop blocks show their latest run (block: its iteration / "
                    "how many runs were recorded)")
    if folded_children:
        what.append(f"a map of over {FOLD_CHILDREN} children shows as one line and its "
                    f"failed children")
    if what:
        total = folded_runs + folded_children + len(task_runs)
        console.print(f"{'; '.join(what).capitalize()}; --all lists all {total} task runs.",
                      style="dim")


def _task_cell(task_run: dict[str, Any]) -> Any:
    """The task column: the task run's name when it has one, its task's name dim beside it."""
    from rich.text import Text

    task_name = task_run.get("task_name") or task_run.get("task_slug") or ""
    run_name = task_run.get("task_run_name")
    if not run_name or run_name == task_name:
        return Text(task_name)
    return Text.assemble(run_name, (f" ({task_name})", "dim"))


@click.command("delete")
@click.argument("run_refs", metavar="[RUN]...", nargs=-1)
@click.option("--older-than", "older_than", type=click.FloatRange(min=0), metavar="DAYS",
              help="Every finished run that started more than DAYS days ago.")
@click.option("--state", type=click.Choice(RUN_STATES, case_sensitive=False),
              help="With --older-than: only runs in this state.")
@debug_option
def delete_command(run_refs: tuple[str, ...], older_than: float | None,
                   state: str | None) -> None:
    """Delete runs and everything recorded for them (states, logs, results, result files).

    Name runs by id (or unique prefix), or pick them with --older-than. A run
    that is still running is refused; stop it first.
    """
    from iterflow.errors import StoreError

    if not run_refs and older_than is None:
        raise CliError("name the runs to delete, or pass --older-than DAYS",
                       "`iterflow runs` lists the recorded runs", EXIT_USAGE)
    if state is not None and older_than is None:
        raise CliError("--state goes with --older-than", exit_code=EXIT_USAGE)
    from iterflow.store import delete_run, runs_older_than

    with store_session() as store:
        targets = [resolve_run(store, ref)["run_id"] for ref in run_refs]
        if older_than is not None:
            targets += runs_older_than(older_than, state=state, store=store)
        deleted = 0
        for run_id in dict.fromkeys(targets):  # each once, in order
            try:
                delete_run(run_id, store=store)
            except StoreError as exc:
                raise CliError(str(exc), f"{deleted} run(s) deleted before this one") from exc
            deleted += 1
    click.echo(f"Deleted {deleted} run{'' if deleted == 1 else 's'}.")

"""``iterflow show RUN --iterations TASK``: one task run's recorded iterations.

A loop may have recorded a million states, so nothing here holds them all:
records come from :mod:`iterflow.store.paging` a batch at a time.

- The table shows, by default, the first :data:`HEAD` and the last
  :data:`TAIL` iterations with a line counting those between;
  ``--offset K --limit N`` shows any page instead. Rows are drawn in chunks of
  :data:`CHUNK` with fixed column widths, so the chunks line up as one table
  and a big page never becomes one big rich table.
- Iteration labels (``iterflow.set_iteration_label``) get a ``label`` column
  when the first rows or the last ones have any; ``--json`` always has the field.
- ``--json`` streams the whole list (or the page), one object per line,
  each written as soon as it is read.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Iterable, Iterator
from itertools import chain, islice
from typing import Any

from iterflow.cli.common import (
    EXIT_USAGE,
    CliError,
    format_time,
    iso_time,
    short_id,
    state_style,
)

__all__ = ["CHUNK", "HEAD", "TAIL", "show_iterations"]

#: Iterations shown before and after the gap when no page is asked for.
HEAD = 10
TAIL = 10
#: Rows per rich table: small enough to draw at once, any number of them in a row.
CHUNK = 500


def show_iterations(
    store: Any,
    run: dict[str, Any],
    task: str,
    map_index: int | None,
    *,
    as_json: bool,
    offset: int = 0,
    limit: int | None = None,
) -> None:
    """Print one task run's iterations: a table (head, gap, tail; or a page) or JSON."""
    from iterflow.errors import StoreError
    from iterflow.store.paging import (
        count_iterations,
        iter_iteration_dicts,
        iter_iterations,
        last_iterations,
    )

    hint = f"`iterflow show {short_id(run['run_id'])}` lists its task runs"
    run_id = run["run_id"]
    try:
        if as_json:
            records = iter_iteration_dicts(run_id, task, map_index, offset=offset,
                                           limit=limit, store=store)
            first = list(islice(records, 1))  # an unknown task raises here, before any output
            _stream_json(first, records)
            return
        total = count_iterations(run_id, task, map_index, store=store)
        paged = limit is not None or offset > 0
        if paged:
            head = iter_iterations(run_id, task, map_index, offset=offset, limit=limit,
                                   store=store)
            tail: list[Any] = []
        elif total <= HEAD + TAIL:
            head, tail = iter_iterations(run_id, task, map_index, store=store), []
        else:
            head = iter_iterations(run_id, task, map_index, limit=HEAD, store=store)
            tail = last_iterations(run_id, task, TAIL, map_index, store=store)
        _print_table(run, task, map_index, total, head, tail, offset=offset, paged=paged)
    except StoreError as exc:
        raise CliError(str(exc), hint, EXIT_USAGE) from exc


def _stream_json(first: list[dict[str, Any]], rest: Iterator[dict[str, Any]]) -> None:
    """A JSON list, one object per line: each is encoded (by the C encoder) as it is read."""
    write = sys.stdout.write
    if not first:
        write("[]\n")
        return
    # A record holds text, ints and its time (made an ISO string here): no float that
    # strict JSON refuses, and allow_nan=False would fail loudly if one ever came.
    encode = json.JSONEncoder(allow_nan=False, default=str).encode
    separator = "[\n  "
    for row in chain(first, rest):
        row["time"] = iso_time(row["time"])
        write(separator)
        write(encode(row))
        separator = ",\n  "
    write("\n]\n")


def _print_table(
    run: dict[str, Any],
    task: str,
    map_index: int | None,
    total: int,
    head: Iterable[Any],
    tail: list[Any],
    *,
    offset: int,
    paged: bool,
) -> None:
    from rich.console import Console
    from rich.text import Text

    console = Console(highlight=False)
    child = f"[{map_index}]" if map_index is not None else ""
    count = f"{total:,} state" + ("" if total == 1 else "s")
    console.print(Text.assemble("Iterations of ", (f"{task}{child}", "bold"), " in run ",
                                (short_id(run["run_id"]), "bold"), f" ({count})"))
    if not total:
        console.print(Text("No iterations recorded.", style="dim"))
        return
    rows = iter(head)
    first = list(islice(rows, CHUNK))
    if map_index is None and first and all(r.state == "Mapped" for r in first):
        console.print(Text(f"{task} is mapped: its children loop, each on its own; pick one "
                           f"with --map-index N.", style="dim"))
    # A task inside a loop block: its runs in every block iteration, each marked.
    in_block = any(r.block_index is not None for r in [*first, *tail])
    # Labels (iterflow.set_iteration_label) get a column when the rows at hand have any.
    labelled = any(r.label for r in [*first, *tail])
    shown = len(first)
    _draw(console, first, in_block, labelled, header=True)
    while chunk := list(islice(rows, CHUNK)):
        shown += len(chunk)
        _draw(console, chunk, in_block, labelled, header=False)
    if tail:
        hidden = total - shown - len(tail)
        console.print(Text(
            f"  … {hidden:,} more state{'s' if hidden != 1 else ''} "
            f"(see them with --offset {shown} --limit N, or all with --json)",
            style="dim",
        ))
        _draw(console, tail, in_block, labelled, header=False)
    elif paged:
        end = offset + shown
        note = (f"states {offset + 1:,} to {end:,} of {total:,}" if shown
                else f"no states after the first {offset:,}")
        console.print(Text(f"  {note}; --offset and --limit page through the rest",
                           style="dim"))


def _draw(console: Any, records: list[Any], in_block: bool, labelled: bool, *,
          header: bool) -> None:
    from rich.table import Table
    from rich.text import Text

    if not records:
        return
    # Fixed widths, so that chunk after chunk lines up as one table.
    table = Table(box=None, header_style="bold", pad_edge=False, show_header=header,
                  expand=True)
    if in_block:
        table.add_column("block", justify="right", no_wrap=True, width=5)
    table.add_column("iteration", justify="right", no_wrap=True, width=9)
    table.add_column("state", no_wrap=True, width=13)
    table.add_column("time", no_wrap=True, width=19)
    if labelled:
        table.add_column("label", overflow="fold", ratio=1)
    # The rest of the line, shared by result and message whatever the rows hold.
    table.add_column("result", overflow="fold", ratio=1)
    table.add_column("message", overflow="fold", ratio=1)
    for record in records:
        block = [] if not in_block else [
            "" if record.block_index is None else str(record.block_index)
        ]
        table.add_row(
            *block,
            "" if record.loop_index is None else str(record.loop_index),
            Text(str(record.state), style=state_style(record.state)),
            format_time(record.time),
            *([Text(record.label or "")] if labelled else []),  # users' text: never markup
            Text(record.preview or "", style="dim"),
            Text(record.message or ""),  # users' text: never markup
        )
    console.print(table)

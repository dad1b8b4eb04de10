"""``iterflow serve`` and ``iterflow schedules``: flows on their schedules.

``serve FILE[:FLOW]...`` loads each flow as ``iterflow run`` does (a file
holding several flows serves every one that has schedules, unless FLOW names
one) and hands them to :func:`iterflow.schedules.server.serve`, which prints
a status line per flow as it goes. ``schedules`` lists the next fire times:
of the flows in the files given, or, with no file, of every flow a ``serve``
recorded in the store (with who serves it).
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

import click

from iterflow.cli.common import (
    EXIT_USAGE,
    CliError,
    debug_option,
    format_time,
    iso_time,
    store_session,
)

__all__ = ["schedules_command", "serve_command"]


def _scheduled_flows(targets: tuple[str, ...]) -> list[tuple[Any, str]]:
    """``(flow, source)`` for each flow with schedules in the files ``targets`` name."""
    from iterflow.cli.run import LoadedFlow, _import_file, _split_target, load_flow
    from iterflow.core.flow import Flow

    found: list[tuple[Any, str]] = []
    for target in targets:
        path_text, variable = _split_target(target)
        loaded = load_flow(target) if variable else None
        if loaded is not None:
            candidates = [loaded]
        else:
            try:
                candidates = [load_flow(target)]
            except CliError as exc:
                if "defines" not in exc.message:  # several flows: serve those with schedules
                    raise
                from pathlib import Path

                path = Path(path_text).expanduser().resolve()
                module = _import_file(path)
                candidates = [
                    LoadedFlow(value, name, path, module)
                    for name, value in vars(module).items()
                    if isinstance(value, Flow) and not name.startswith("_") and value.schedules
                ]
        for item in candidates:
            if not item.flow.schedules:
                raise CliError(
                    f"flow {item.flow.name!r} ({item.source}) has no schedules",
                    "give it some: Flow(name, schedules=[Cron('0 * * * *')])", EXIT_USAGE,
                )
            found.append((item.flow, item.source))
    if not found:
        raise CliError("no flow with schedules in " + ", ".join(targets), None, EXIT_USAGE)
    return found


@click.command("serve")
@click.argument("targets", nargs=-1, required=True, metavar="FILE[:FLOW]...")
@click.option("--drain", is_flag=True,
              help="On Ctrl-C or SIGTERM, wait for runs in flight instead of cancelling them.")
@debug_option
def serve_command(targets: tuple[str, ...], drain: bool) -> None:
    """Run flows on their schedules until Ctrl-C or SIGTERM.

    Each run goes in a process of its own. A run that crashes is resumed at
    its last iteration (on_crash="resume"). On stop, runs in flight end
    Cancelled and resumable, or finish first with --drain.

    \b
      iterflow serve flows.py
      iterflow serve etl.py:nightly reports.py --drain
    """
    from iterflow.schedules.server import serve
    from iterflow.store import ServeConflict

    flows = _scheduled_flows(targets)
    try:
        serve(*(f for f, _ in flows), sources=[s for _, s in flows], drain=drain)
    except ServeConflict as exc:
        raise CliError(str(exc), "`iterflow schedules` shows who serves what", EXIT_USAGE) \
            from exc


def _next_times(schedules: list[Any], count: int) -> list[tuple[str, datetime]]:
    now = datetime.now(UTC)
    times: list[tuple[str, datetime]] = []
    for schedule in schedules:
        moment = now
        for _ in range(count):
            moment = schedule.next_after(moment)
            times.append((schedule.name, moment))
    return sorted(times, key=lambda pair: pair[1])[:count]


@click.command("schedules")
@click.argument("targets", nargs=-1, metavar="[FILE[:FLOW]]...")
@click.option("-n", "--count", default=3, show_default=True, type=click.IntRange(min=1),
              help="How many upcoming fire times to list per flow.")
@click.option("--json", "as_json", is_flag=True, help="Print a JSON list instead of a table.")
@debug_option
def schedules_command(targets: tuple[str, ...], count: int, as_json: bool) -> None:
    """List scheduled flows and their next fire times.

    With files: the flows with schedules in them. Without: every flow an
    `iterflow serve` has served from this store, and whether it still does.
    """
    from iterflow.schedules import Schedule

    rows: list[dict[str, Any]] = []
    if targets:
        for flow, source in _scheduled_flows(targets):
            rows.append({"flow_name": flow.name, "source": source, "schedules": flow.schedules,
                         "served_by": None})
    else:
        from iterflow.store.serving import lease_alive, leases

        with store_session() as store:
            for lease in leases(store):
                alive = lease_alive(lease, 15.0)
                rows.append({
                    "flow_name": lease.flow_name, "source": None,
                    "schedules": [Schedule.from_dict(d) for d in lease.schedules or []],
                    "served_by": {"pid": lease.pid, "host": lease.host, "alive": alive,
                                  "heartbeat": lease.heartbeat},
                })
    out = []
    for row in rows:
        out.append({
            "flow_name": row["flow_name"],
            "source": row["source"],
            "schedules": [s.as_dict() for s in row["schedules"]],
            "next": [{"schedule": name, "time": iso_time(moment.timestamp())}
                     for name, moment in _next_times(row["schedules"], count)],
            "served_by": None if row["served_by"] is None else {
                **row["served_by"], "heartbeat": iso_time(row["served_by"]["heartbeat"])},
        })
    if as_json:
        click.echo(json.dumps(out, indent=2))
        return
    if not out:
        click.echo("No scheduled flows recorded; `iterflow schedules FILE` reads them from code.")
        return
    for row in out:
        served = row["served_by"]
        who = ""
        if served is not None:
            who = (f"  served by pid {served['pid']} on {served['host']}" if served["alive"]
                   else "  not served now")
        click.echo(f"{row['flow_name']}{who}")
        for item in row["next"]:
            moment = datetime.fromisoformat(item["time"]).timestamp()
            click.echo(f"  {format_time(moment)}  {item['schedule']}")

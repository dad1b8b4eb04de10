"""``iterflow cancel RUN``: ask the process driving a run to cancel it.

The request goes into the run store; the driving process reads it with its
next heartbeat and cancels the run as Ctrl-C would (see
:mod:`iterflow.store.cancelling`). A run whose process is gone is marked
``Cancelled`` at once.
"""

from __future__ import annotations

import click

from iterflow.cli.common import CliError, debug_option, short_id, store_session

__all__ = ["cancel_command"]


@click.command("cancel")
@click.argument("run_ref", metavar="RUN")
@debug_option
def cancel_command(run_ref: str) -> None:
    """Cancel a running run: its loops stop at their next iteration.

    RUN is a run id or a unique prefix of one. The process driving the run
    stops it within about two heartbeats (ITERFLOW_HEARTBEAT seconds, 5 by
    default); the run ends Cancelled and `iterflow resume RUN` continues it.
    A run whose process has gone is marked Cancelled at once. Exits 1 when the
    run is unknown or has already finished.

    \b
      iterflow cancel 3f9a2c1b
    """
    from iterflow.errors import StoreError
    from iterflow.store import request_cancel

    with store_session() as store:
        try:
            outcome = request_cancel(run_ref, store=store)
            run_id = store.get_run(run_ref).run_id
        except StoreError as exc:
            raise CliError(str(exc), "`iterflow runs` lists the recorded runs") from exc
    short = short_id(run_id)
    if outcome == "cancelled":
        click.echo(f"Run {short} was not running any more (its process had gone): "
                   f"marked Cancelled. `iterflow resume {short}` continues it.")
    else:
        click.echo(f"Cancel requested for run {short}: the process driving it stops it at "
                   f"its next heartbeat. `iterflow resume {short}` continues it afterwards.")

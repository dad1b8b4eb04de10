"""The ``iterflow`` command: a click group and the policy for errors and exit codes.

Commands live one group per module (:mod:`~iterflow.cli.run`: ``run`` and
``resume``; :mod:`~iterflow.cli.cancel`: ``cancel``; :mod:`~iterflow.cli.history`:
``runs``, ``show`` and ``delete``;
:mod:`~iterflow.cli.logs`: ``logs``; :mod:`~iterflow.cli.serve`: ``serve`` and
``schedules``). Each imports rich, the runtime and the
store inside its function, so ``iterflow --help`` costs little more than
importing click.

Every error leaves as one line and a hint (:class:`~iterflow.cli.common.CliError`),
never as a traceback unless ``--debug`` (or ``ITERFLOW_DEBUG=1``) asks for
one: :class:`IterflowGroup` translates whatever a command raises, and prints
click's own usage errors the same way.
"""

from __future__ import annotations

import os
import sys
import traceback
from typing import Any

import click

from iterflow import __version__
from iterflow.cli import cancel, history, logs, run, serve, ui, visualize
from iterflow.cli.common import (
    DEBUG_KEY,
    EXIT_CANCELLED,
    EXIT_FAILED,
    EXIT_USAGE,
    CliError,
    debug_option,
    translate,
)

__all__ = ["IterflowGroup", "cli", "main"]


class IterflowGroup(click.Group):
    """A click group that turns every error into one line and a hint, with an exit code."""

    def invoke(self, ctx: click.Context) -> Any:
        """Run the command; translate what it raises (tracebacks only with ``--debug``)."""
        try:
            return super().invoke(ctx)
        except (click.exceptions.Exit, click.Abort):
            raise
        except click.ClickException as exc:
            if ctx.meta.get(DEBUG_KEY) and exc.__cause__ is not None:
                traceback.print_exception(exc.__cause__)
            raise
        except KeyboardInterrupt:
            raise CliError("interrupted", exit_code=EXIT_CANCELLED) from None
        except BrokenPipeError:
            # The reader went away (`iterflow runs | head`): not worth a word. Point
            # stdout at /dev/null so the interpreter's final flush does not complain.
            devnull = os.open(os.devnull, os.O_WRONLY)
            os.dup2(devnull, sys.stdout.fileno())
            raise click.exceptions.Exit(EXIT_FAILED) from None
        except Exception as exc:
            if ctx.meta.get(DEBUG_KEY):
                traceback.print_exception(exc)
            raise translate(exc) from exc

    def main(  # type: ignore[override]
        self,
        args: Any = None,
        prog_name: str | None = None,
        complete_var: str | None = None,
        standalone_mode: bool = True,
        **extra: Any,
    ) -> Any:
        """Run the command line and exit with its code (see :mod:`iterflow.cli.common`)."""
        if not standalone_mode:
            return super().main(args, prog_name, complete_var, False, **extra)
        try:
            code = super().main(args, prog_name, complete_var, False, **extra)
        except click.exceptions.NoArgsIsHelpError as exc:
            exc.show()
            code = exc.exit_code
        except click.UsageError as exc:
            _show_usage_error(exc)
            code = EXIT_USAGE
        except click.ClickException as exc:
            exc.show()
            code = exc.exit_code
        except click.Abort:
            click.echo(click.style("error: ", fg="red", bold=True) + "interrupted", err=True)
            code = EXIT_CANCELLED
        sys.exit(code if isinstance(code, int) else 0)


def _show_usage_error(exc: click.UsageError) -> None:
    # click prints the usage, a "Try --help" line and "Error: ..."; keep to our two lines.
    command = exc.ctx.command_path if exc.ctx is not None else "iterflow"
    CliError(exc.format_message(), f"see `{command} --help`").show()


@click.group(
    "iterflow",
    cls=IterflowGroup,
    context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100},
)
@click.version_option(__version__, "--version", prog_name="iterflow")
@debug_option
def cli() -> None:
    """iterflow: run workflows whose tasks loop, and look at their runs.

    \b
    Examples:
      iterflow run flows.py -p n=100        run the only Flow in flows.py
      iterflow run flows.py:etl --executor threads
      iterflow runs                         the latest runs
      iterflow show 3f9a2c1b                one run's task runs
      iterflow resume 3f9a2c1b              continue a failed or crashed run
      iterflow logs 3f9a2c1b --follow       a run's log records
      iterflow serve flows.py               run flows on their schedules

    The run store is $ITERFLOW_HOME/iterflow.db (ITERFLOW_HOME defaults to
    ~/.iterflow), or any SQLAlchemy URL in ITERFLOW_STORE_URL.
    """


cli.add_command(run.run_command)
cli.add_command(run.resume_command)
cli.add_command(cancel.cancel_command)
cli.add_command(history.runs_command)
cli.add_command(history.show_command)
cli.add_command(history.delete_command)
cli.add_command(logs.logs_command)
cli.add_command(serve.serve_command)
cli.add_command(serve.schedules_command)
cli.add_command(ui.ui_command)
cli.add_command(visualize.visualize_command)


def main(argv: list[str] | None = None) -> None:
    """The console script: ``iterflow ...`` (and ``python -m iterflow ...``)."""
    cli.main(args=argv, prog_name="iterflow")

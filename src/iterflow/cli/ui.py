"""``iterflow ui``: serve the web dashboard over the run store.

Loopback (``127.0.0.1``) by default, and then open to whoever can reach the
port on this machine, like any local development server. Any other
``--host`` needs a token: ``--token``, else ``ITERFLOW_UI_TOKEN``, else one
is generated and printed with the URL to open. Needs the ``ui`` extra.
"""

from __future__ import annotations

import ipaddress
import os
import secrets
import webbrowser

import click

from iterflow.cli.common import EXIT_USAGE, CliError, debug_option

__all__ = ["is_loopback", "ui_command"]

TOKEN_ENV = "ITERFLOW_UI_TOKEN"


def is_loopback(host: str) -> bool:
    """Whether ``host`` names this machine only (127.0.0.0/8, ::1, ``localhost``)."""
    if host.strip().lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


@click.command("ui")
@click.option("--host", default="127.0.0.1", show_default=True,
              help="Address to listen on; anything but loopback requires a token.")
@click.option("--port", default=4200, show_default=True, type=click.IntRange(0, 65535),
              help="Port to listen on.")
@click.option("--token", default=None,
              help=f"Token every request must carry (default: ${TOKEN_ENV}; generated "
                   f"for a non-loopback host when neither is set).")
@click.option("--open", "open_browser", is_flag=True, help="Open the dashboard in a browser.")
@click.option("--read-only", is_flag=True, help="Refuse every request that is not GET or HEAD.")
@debug_option
def ui_command(host: str, port: int, token: str | None, open_browser: bool,
               read_only: bool) -> None:
    """Serve the dashboard: runs, loops and their iterations, live.

    \b
    Examples:
      iterflow ui                         http://127.0.0.1:4200/
      iterflow ui --port 8080 --open
      iterflow ui --host 0.0.0.0          prints the token to give your browser
    """
    try:
        import uvicorn

        from iterflow.ui import create_app
    except ImportError as exc:
        raise CliError(
            f"the dashboard needs the ui extra ({exc.name} is missing)",
            "pip install 'iterflow[ui]'", EXIT_USAGE,
        ) from exc
    from iterflow.store import open_store

    token = token or os.environ.get(TOKEN_ENV) or None
    generated = False
    if token is None and not is_loopback(host):
        token = secrets.token_urlsafe(24)
        generated = True
    store = open_store()
    shown_host = f"[{host}]" if ":" in host else host
    url = f"http://{shown_host}:{port}/"
    link = f"{url}?token={token}" if token else url
    click.echo(f"iterflow dashboard for {store.name}")
    click.echo(f"  {link}")
    if generated:
        click.echo(f"  (generated token; set {TOKEN_ENV} or --token to choose one)")
    if open_browser:
        webbrowser.open(link)
    # On loopback without a token, answer only requests naming this machine, so a
    # page elsewhere cannot reach the dashboard through DNS rebinding.
    allowed = None
    if token is None:
        allowed = frozenset({"localhost", "127.0.0.1", "::1", host.strip("[]").lower()})
    app = create_app(store, token=token, read_only=read_only, allowed_hosts=allowed)
    try:
        uvicorn.run(app, host=host, port=port, log_level="warning", access_log=False)
    finally:
        store.close()

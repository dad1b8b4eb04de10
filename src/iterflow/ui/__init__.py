"""The web dashboard (``iterflow ui``): runs, loops and their iterations in a browser.

Needs the ``ui`` extra (``pip install 'iterflow[ui]'``). It reads the store
through :mod:`iterflow.store` and never unpickles anything: values are shown
by their stored previews. See ``docs/dashboard.md``.

>>> from iterflow.store import open_store          # doctest: +SKIP
>>> from iterflow.ui import create_app              # doctest: +SKIP
>>> app = create_app(open_store())                  # doctest: +SKIP
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from iterflow.ui.app import create_app

__all__ = ["create_app"]


def __getattr__(name: str) -> Any:
    # Starlette and Jinja2 load only when the dashboard is used.
    if name == "create_app":
        from iterflow.ui.app import create_app

        return create_app
    raise AttributeError(f"module 'iterflow.ui' has no attribute {name!r}")

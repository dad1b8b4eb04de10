"""Re-exports of the small tasks the graph builder adds (home: :mod:`iterflow.core.helpers`)."""

from iterflow.core.helpers import Constant, GetItem

__all__ = ["Constant", "GetItem"]

"""How iterflow pickles a value it ships to another process or keeps for later.

Both the Dask executor (values travelling to and from workers) and the run
store (results kept for a resume in a new process) need the same thing: the
standard library's :func:`pickle.dumps` — several times faster than
cloudpickle for the small values a loop passes on — and cloudpickle where it
cannot do: for what it refuses (lambdas, local classes), and for anything
whose pickle mentions ``__main__``, because stdlib pickle stores classes and
functions by *name* and the other process's ``__main__`` is another module;
cloudpickle stores them by value. Either output loads with :func:`pickle.loads`.
"""

from __future__ import annotations

import pickle
from types import ModuleType
from typing import Any

__all__ = ["PROTOCOL", "dumps", "pickle_by_value", "type_name"]

PROTOCOL = pickle.HIGHEST_PROTOCOL

# Besides __main__, the modules whose names in a stdlib pickle send it to cloudpickle.
_BY_VALUE: tuple[bytes, ...] = ()


def pickle_by_value(module: ModuleType) -> None:
    """Pickle what ``module`` defines by value from now on (see "Flow files" above)."""
    global _BY_VALUE
    import cloudpickle

    cloudpickle.register_pickle_by_value(module)
    marker = module.__name__.encode()
    if marker not in _BY_VALUE:
        _BY_VALUE = (*_BY_VALUE, marker)


def dumps(value: Any) -> bytes:
    """Pickle ``value``: the standard library first, cloudpickle where needed (see above).

    Raises what cloudpickle raises for a value neither can pickle.

    >>> import pickle
    >>> pickle.loads(dumps(lambda x: x + 1))(1)
    2
    """
    try:
        data = pickle.dumps(value, protocol=PROTOCOL)
    except Exception:
        data = None
    # b"__main__" may also just occur in a string: then cloudpickle does the
    # same job a little slower, which is harmless.
    # (The common case, no flow file, costs one test: this runs once per loop iteration.)
    if data is None or b"__main__" in data or (
        _BY_VALUE and any(marker in data for marker in _BY_VALUE)
    ):
        import cloudpickle  # imported only when needed: it is slow to import

        data = cloudpickle.dumps(value, protocol=PROTOCOL)
    return data


def type_name(value: Any) -> str:
    """The type of ``value`` as messages name it: ``int``, ``mymodule.Thing``.

    >>> type_name(3), type_name(pickle.PickleError())
    ('int', '_pickle.PickleError')
    """
    kind = type(value)
    module = kind.__module__
    return kind.__qualname__ if module == "builtins" else f"{module}.{kind.__qualname__}"

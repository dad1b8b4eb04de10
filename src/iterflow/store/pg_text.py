"""Text for PostgreSQL: a NUL character is written as U+FFFD instead of failing the write.

PostgreSQL's text types cannot hold NUL (``\\x00``); psycopg refuses such a
string, and the whole transaction with it. What iterflow writes as text is
for people to read (previews, messages, tracebacks, labels, task run names,
log lines): results themselves go as bytes. One NUL in an exception's message
or a label must not fail the run's recording, on PostgreSQL only. So the store's
connections dump strings with the replacement character in place of NUL (as a
decoder marks what it could not read); SQLite keeps the text as it was given.

A dumper costs a Python call per string, ~0.5 µs (psycopg's own are C):
about doubling what ``COPY`` costs a row of five strings. So the store turns
them on only when PostgreSQL has refused a NUL
(:func:`iterflow.store.clean_text.nul_free_from_now_on`).
"""

from __future__ import annotations

from typing import Any

from psycopg.types.string import StrBinaryDumper, StrDumperUnknown

__all__ = ["NUL_REPLACEMENT", "use_nul_free_text"]

NUL_REPLACEMENT = "\ufffd"


class NulFreeText(StrDumperUnknown):
    """psycopg's default text-format dumper for ``str``, NUL replaced."""

    def dump(self, obj: str) -> bytes:
        if "\x00" in obj:
            obj = obj.replace("\x00", NUL_REPLACEMENT)
        return obj.encode(self._encoding)


class NulFreeBinaryText(StrBinaryDumper):
    """psycopg's binary-format dumper for ``str``, NUL replaced."""

    def dump(self, obj: str) -> bytes:
        if "\x00" in obj:
            obj = obj.replace("\x00", NUL_REPLACEMENT)
        return obj.encode(self._encoding)


def use_nul_free_text(dbapi_connection: Any) -> None:
    """This psycopg connection writes NUL-free text from now on.

    Registered last, each becomes the default for its format, as psycopg's own were.
    """
    adapters = dbapi_connection.adapters
    adapters.register_dumper(str, NulFreeBinaryText)
    adapters.register_dumper(str, NulFreeText)

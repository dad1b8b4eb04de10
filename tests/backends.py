"""The store back ends the suite runs against: SQLite always, PostgreSQL when available.

``.ci/services.sh`` starts a PostgreSQL server on loopback and sets
``ITERFLOW_TEST_POSTGRES_URL``; without it the PostgreSQL cases are skipped.
Each PostgreSQL test gets its own schema (through ``search_path`` in the URL),
dropped afterwards, so tests never see each other's rows and the suite needs
only one database.
"""

from __future__ import annotations

import contextlib
import os
import uuid
from collections.abc import Iterator

import pytest

PG_URL = os.environ.get("ITERFLOW_TEST_POSTGRES_URL")

#: Parameters for a ``store_url`` fixture: ``"sqlite"`` and ``"postgres"``.
BACKENDS = [
    "sqlite",
    pytest.param(
        "postgres",
        marks=[
            pytest.mark.postgres,
            pytest.mark.skipif(not PG_URL, reason="ITERFLOW_TEST_POSTGRES_URL is not set"),
        ],
    ),
]


@contextlib.contextmanager
def postgres_schema(prefix: str) -> Iterator[str]:
    """A URL for a fresh, empty PostgreSQL schema, dropped when the block ends."""
    import sqlalchemy as sa
    from sqlalchemy.engine import make_url

    schema = f"{prefix}_{uuid.uuid4().hex[:12]}"
    admin = sa.create_engine(PG_URL)
    try:
        with admin.begin() as conn:
            conn.exec_driver_sql(f'CREATE SCHEMA "{schema}"')
        url = make_url(PG_URL).update_query_dict({"options": f"-csearch_path={schema}"})
        yield url.render_as_string(hide_password=False)
    finally:
        with admin.begin() as conn:
            conn.exec_driver_sql(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')
        admin.dispose()

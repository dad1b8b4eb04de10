"""The migration that adds ``cancel_requests``, on a real version-1 store with runs."""

from __future__ import annotations

import pytest
import sqlalchemy as sa

from iterflow.errors import StoreError
from iterflow.store import open_store, request_cancel
from iterflow.store.migrations import MIGRATIONS, _add_cancel_requests
from iterflow.store.runstore import RunStore

from .test_migration import FAILED, build_v1_store


def _tables(url: str) -> set[str]:
    engine = sa.create_engine(url)
    try:
        return set(sa.inspect(engine).get_table_names())
    finally:
        engine.dispose()


def test_cancel_requests_arrive_on_a_store_with_runs(store_url):
    build_v1_store(store_url)
    mine = MIGRATIONS.index(_add_cancel_requests)
    RunStore(store_url, migrations=MIGRATIONS[:mine]).close()
    assert "cancel_requests" not in _tables(store_url)
    with open_store(store_url) as store:
        assert {r.state for r in store.list_runs()} == {"Failed", "Success"}
        # Finished runs have nothing to cancel; the refusal reads the new table's store.
        with pytest.raises(StoreError, match="already finished"):
            request_cancel(FAILED, store=store)
    assert "cancel_requests" in _tables(store_url)


def test_the_migration_leaves_a_table_already_there_alone(sqlite_url):
    RunStore(sqlite_url).close()  # a new store: it has the table already
    engine = sa.create_engine(sqlite_url)
    try:
        with engine.begin() as conn:
            conn.execute(sa.text(
                "INSERT INTO cancel_requests (run_id, owner, requested) VALUES ('r', 'o', 1)"
            ))
            _add_cancel_requests(conn)
            assert conn.execute(sa.text("SELECT owner FROM cancel_requests")).scalar() == "o"
    finally:
        engine.dispose()

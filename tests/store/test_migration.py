"""Upgrading a real version-1 store: its runs read back the same and resume where they stopped.

``data/v1_store.json`` holds every row of a store written by iterflow 0.1.0
(schema version 1) for two runs of :func:`tests.store.v1_flows.build`: one
where ``count`` failed at iteration 3, one that succeeded. Each test rebuilds
that store with the frozen version-1 tables, on SQLite and PostgreSQL, and
opens it with today's code, which migrates it.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

from iterflow.errors import StoreError
from iterflow.store import SCHEMA_VERSION, open_store
from iterflow.store.migrations import MIGRATIONS, _add_rewinds, _run_owner_and_task_identity
from iterflow.store.runstore import RunStore

from . import schema_v1, v1_flows

DATA = json.loads((Path(__file__).parent / "data" / "v1_store.json").read_text())
FAILED, SUCCEEDED = DATA["runs"]["failed"], DATA["runs"]["succeeded"]


def _value(column: sa.Column, value: Any) -> Any:
    if isinstance(value, dict) and "hex" in value:
        return bytes.fromhex(value["hex"])
    if isinstance(column.type, sa.JSON) and isinstance(value, str):
        return json.loads(value)  # the dump has SQLite's JSON text
    return value


def build_v1_store(url: str) -> None:
    engine = sa.create_engine(url)
    try:
        schema_v1.metadata.create_all(engine)
        with engine.begin() as conn:
            for name, dump in DATA["tables"].items():
                table = schema_v1.metadata.tables[name]
                rows = [
                    {c: _value(table.c[c], v) for c, v in zip(dump["columns"], row)}
                    for row in dump["rows"]
                ]
                if rows:
                    conn.execute(table.insert(), rows)
            if conn.dialect.name == "postgresql":
                # Rows inserted with their ids leave the serial sequences behind;
                # in a store iterflow wrote they had handed out those ids.
                for name in ("logs", "state_transitions"):
                    conn.exec_driver_sql(
                        f"SELECT setval(pg_get_serial_sequence('{name}', 'id'), "
                        f"(SELECT max(id) FROM {name}))"
                    )
    finally:
        engine.dispose()


def v1_result_id(task_run_id: str, loop_index: int) -> int:
    dump = DATA["tables"]["state_transitions"]
    cols = dump["columns"]
    for row in dump["rows"]:
        rec = dict(zip(cols, row))
        wanted = (task_run_id, loop_index, "Looped")
        if (rec["task_run_id"], rec["loop_index"], rec["kind"]) == wanted:
            return rec["result_id"]
    raise LookupError(task_run_id)


@pytest.fixture
def v1_url(store_url):
    build_v1_store(store_url)
    return store_url


def scalar(store, sql: str, **params: Any) -> Any:
    with store.engine.connect() as conn:
        return conn.execute(sa.text(sql), params).scalar()


def test_the_fixture_is_a_version_1_store(v1_url):
    assert SCHEMA_VERSION == 1 + len(MIGRATIONS) >= 2
    engine = sa.create_engine(v1_url)
    try:
        with engine.connect() as conn:
            assert conn.exec_driver_sql("SELECT version FROM schema_version").scalar() == 1
        columns = {c["name"] for c in sa.inspect(engine).get_columns("task_runs")}
        assert "looped_result_id" in columns
    finally:
        engine.dispose()


def test_a_version_1_store_reads_back_the_same_after_upgrading(v1_url):
    with open_store(v1_url) as store:
        assert store.schema_version == SCHEMA_VERSION
        runs = {r.run_id: r for r in store.list_runs()}
        assert {runs[FAILED].state, runs[SUCCEEDED].state} == {"Failed", "Success"}
        assert runs[FAILED].parameters == {"n": 5, "shape": [2, 3]}

        history = store.iterations(FAILED, "count")
        assert [(h.loop_index, h.state) for h in history] == [
            (0, "Looped"), (1, "Looped"), (2, "Looped"), (3, "Failed"),
        ]
        assert [store.load_result(h.result_id) for h in history[:3]] == [0, 1, 3]
        assert [h.preview for h in history[:3]] == ["0", "1", "3"]
        assert all(h.size and h.serializer == "pickle" for h in history[:3])
        failure = store.load_result(history[3].result_id)
        assert isinstance(failure, RuntimeError) and str(failure) == "failed at 3"

        by_task = {(t.task_slug, t.map_index): t for t in store.task_runs(SUCCEEDED)}
        assert by_task[("count", None)].result_preview == "3"
        assert by_task[("as_json", None)].result_preview == "{'values': [4, 8, 12]}"
        assert by_task[("square_loop", 1)].loop_count == 3
        json_history = store.iterations(SUCCEEDED, "as_json")
        assert json_history[-1].serializer == "json"
        assert store.load_result(json_history[-1].result_id) == {"values": [4, 8, 12]}
        lines = store.logs(FAILED)
        assert [e.message for e in lines] == [f"count at {i}" for i in range(4)]
        assert {(e.task_slug, e.task_run_id) for e in lines} == {("count", f"{FAILED}/count")}
        assert [e.loop_index for e in lines] == [0, 1, 2, 3]
        assert [e.message for e in store.logs(FAILED, after=lines[1].id)] == [
            "count at 2", "count at 3",
        ]

        # Values moved into their states' rows; only the run parameters that
        # are not plain JSON (a tuple, in both runs) stay in `results`.
        assert scalar(store, "SELECT count(*) FROM results") == 2
        outside = "SELECT count(*) FROM state_transitions WHERE result_id IS NOT NULL"
        assert scalar(store, outside) == 0
        # Every state row's integer keys name its flow run and task run.
        assert scalar(store, "SELECT count(*) FROM state_transitions") == len(
            DATA["tables"]["state_transitions"]["rows"]
        )
        orphans = (
            "SELECT count(*) FROM state_transitions s "
            "LEFT JOIN flow_runs f ON f.id = s.flow_run "
            "LEFT JOIN task_runs t ON t.id = s.task_run "
            "WHERE f.run_id IS NULL OR (s.task_run IS NOT NULL AND t.task_run_id IS NULL)"
        )
        assert scalar(store, orphans) == 0
        flow_states = "SELECT count(*) FROM state_transitions WHERE task_run IS NULL"
        assert scalar(store, flow_states) == 4  # each run's Running and its end


def test_a_version_1_result_in_a_file_stays_there(v1_url, home):
    # Version 1 kept values over 1 MiB in files; move one there, as it would be.
    result_id = v1_result_id(f"{FAILED}/count", 2)
    engine = sa.create_engine(v1_url)
    path = home / "results" / "moved.bin"
    path.parent.mkdir(parents=True)
    with engine.begin() as conn:
        data = conn.execute(sa.text("SELECT data FROM results WHERE id = :i"), {"i": result_id})
        path.write_bytes(data.scalar())
        conn.execute(
            sa.text("UPDATE results SET data = NULL, path = :p WHERE id = :i"),
            {"p": str(path), "i": result_id},
        )
    engine.dispose()
    with open_store(v1_url) as store:
        history = store.iterations(FAILED, "count")
        assert store.load_result(history[2].result_id) == 3
        assert history[2].preview == "3"
        assert scalar(store, "SELECT path FROM results WHERE id = :i", i=result_id) == str(path)


def test_a_failed_version_1_run_resumes_at_its_last_iteration(v1_url):
    flow = v1_flows.build()
    v1_flows.FAIL_AT["at"] = None
    state = flow.run(resume=FAILED, store=v1_url)
    assert state.is_successful(), state
    assert state.run_id == FAILED
    results = {t.name: s for t, s in state.result.items()}
    assert results["count"].result == 0 + 1 + 2 + 3 + 4 + 5
    assert results["as_json"].result == {"values": [4, 8, 12]}
    with open_store(v1_url) as store:
        history = store.iterations(FAILED, "count")
        # Iterations 0-2 were not run again: the resumed run went on at 3.
        assert [h.loop_index for h in history] == [0, 1, 2, 3, 3, 4, 5]
        assert [store.load_result(h.result_id) for h in history[4:6]] == [6, 10]
        assert [e.message for e in store.logs(FAILED)][4:] == [f"count at {i}" for i in (3, 4, 5)]
        # The finished mapped children were loaded, not run again.
        assert [h.loop_index for h in store.iterations(FAILED, "square_loop", 0)] == [0, 1, 2]
        # New ids never collide with migrated ones.
        assert scalar(store, "SELECT count(*) - count(DISTINCT id) FROM state_transitions") == 0


def test_the_upgrade_is_one_transaction(v1_url):
    # A migration after the newest that fails: the store stays at version 1, whole.
    def broken(conn: sa.Connection) -> None:
        raise RuntimeError("halfway")

    last = f"from schema version {SCHEMA_VERSION} to {SCHEMA_VERSION + 1} failed"
    with pytest.raises(StoreError, match=last):
        RunStore(v1_url, migrations=(*MIGRATIONS, broken))
    engine = sa.create_engine(v1_url)
    try:
        with engine.connect() as conn:
            assert conn.exec_driver_sql("SELECT version FROM schema_version").scalar() == 1
            assert conn.exec_driver_sql("SELECT count(*) FROM results").scalar() == len(
                DATA["tables"]["results"]["rows"]
            )
        columns = {c["name"] for c in sa.inspect(engine).get_columns("task_runs")}
        assert "looped_result_id" in columns
    finally:
        engine.dispose()


def test_an_upgraded_store_has_the_tables_a_new_store_has(v1_url):
    from iterflow.store.schema import metadata

    open_store(v1_url).close()
    engine = sa.create_engine(v1_url)
    try:
        inspector = sa.inspect(engine)
        for name, table in metadata.tables.items():
            columns = {c["name"]: c["nullable"] for c in inspector.get_columns(name)}
            assert set(columns) == set(table.c.keys()), name
            for column in table.c:
                if not column.primary_key:
                    assert columns[column.name] == column.nullable, (name, column.name)
            indexes = {i["name"] for i in inspector.get_indexes(name)}
            assert indexes == {i.name for i in table.indexes}, name
            if engine.dialect.name == "postgresql" and len(table.primary_key.columns):
                assert inspector.get_pk_constraint(name)["name"] == f"{name}_pkey"
    finally:
        engine.dispose()



def test_run_owners_and_task_identities_arrive_on_a_store_with_runs(v1_url):
    # The store as it was just before this migration, whatever ran before it.
    mine = MIGRATIONS.index(_run_owner_and_task_identity)
    RunStore(v1_url, migrations=MIGRATIONS[:mine]).close()
    engine = sa.create_engine(v1_url)
    try:
        assert "owner" not in {c["name"] for c in sa.inspect(engine).get_columns("flow_runs")}
    finally:
        engine.dispose()
    with open_store(v1_url) as store:
        assert store.schema_version == SCHEMA_VERSION
        assert scalar(store, "SELECT count(*) FROM flow_runs WHERE owner IS NOT NULL") == 0
        assert scalar(store, "SELECT count(*) FROM task_runs WHERE identity IS NOT NULL") == 0
        assert {r.state for r in store.list_runs()} == {"Failed", "Success"}
    # A run recorded before owners and identities resumes (its task runs are trusted)
    # and from then on has both.
    v1_flows.FAIL_AT["at"] = None
    state = v1_flows.build().run(resume=FAILED, store=v1_url)
    assert state.is_successful(), state
    with open_store(v1_url) as store:
        owner = "SELECT owner FROM flow_runs WHERE run_id = :r"
        assert len(scalar(store, owner, r=FAILED)) == 32
        identity = "SELECT identity FROM task_runs WHERE task_run_id = :t"
        assert scalar(store, identity, t=f"{FAILED}/count") is not None


def test_rewinds_arrive_on_a_store_with_runs_and_a_recorded_run_rewinds(v1_url):
    mine = MIGRATIONS.index(_add_rewinds)
    RunStore(v1_url, migrations=MIGRATIONS[:mine]).close()
    engine = sa.create_engine(v1_url)
    try:
        assert "rewinds" not in sa.inspect(engine).get_table_names()
    finally:
        engine.dispose()
    with open_store(v1_url) as store:
        assert store.schema_version == SCHEMA_VERSION
        assert scalar(store, "SELECT count(*) FROM rewinds") == 0
        assert {r.state for r in store.list_runs()} == {"Failed", "Success"}
    # A run recorded before the table existed rewinds like a new one.
    v1_flows.FAIL_AT["at"] = None
    state = v1_flows.build().run(resume=SUCCEEDED, store=v1_url, from_iteration=1, task="count")
    assert state.is_successful(), state
    with open_store(v1_url) as store:
        assert scalar(store, "SELECT from_iteration FROM rewinds WHERE run_id = :r",
                      r=SUCCEEDED) == 1
    # Applying the migration again (a store that has the table) changes nothing.
    engine = sa.create_engine(v1_url)
    try:
        with engine.begin() as conn:
            _add_rewinds(conn)
    finally:
        engine.dispose()


def test_openers_of_a_new_store_at_once_wait_for_each_other(tmp_path):
    # Switching a new file to WAL while another connection does so can be refused
    # at once ("database is locked", without SQLite's busy wait): the store open
    # tries again within its lock timeout. Three openers at once, many times.
    import threading

    from iterflow.store import db
    from iterflow.store.db import set_wal

    failures = []
    for trial in range(40):
        url = f"sqlite:///{tmp_path}/new{trial}.db"
        engines = [db.create_engine(url, lock_timeout=5) for _ in range(3)]
        start = threading.Barrier(len(engines))

        def switch(engine, start=start):
            start.wait()
            try:
                set_wal(engine, "new.db", 5.0)
            except StoreError as exc:
                failures.append(exc)

        threads = [threading.Thread(target=switch, args=(e,)) for e in engines]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        for engine in engines:
            engine.dispose()
    assert failures == []

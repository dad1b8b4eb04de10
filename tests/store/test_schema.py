"""Opening a store: creation, versions, migrations, and stores that must be refused."""

from __future__ import annotations

import hashlib
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest
import sqlalchemy as sa

from iterflow.errors import StoreError
from iterflow.store import SCHEMA_VERSION, open_store
from iterflow.store.migrations import MIGRATIONS
from iterflow.store.runstore import RunStore, default_url
from iterflow.store.schema import metadata

from .helpers import RunEvents


def digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def set_version(store_url: str, version: int) -> None:
    engine = sa.create_engine(store_url)
    with engine.begin() as conn:
        conn.execute(sa.text("UPDATE schema_version SET version = :v"), {"v": version})
    engine.dispose()


def test_a_new_store_has_every_table_at_the_current_version(store):
    names = set(sa.inspect(store.engine).get_table_names())
    assert set(metadata.tables) <= names
    with store.engine.connect() as conn:
        assert conn.execute(sa.text("SELECT version FROM schema_version")).scalar() == (
            SCHEMA_VERSION
        )
    assert store.schema_version == SCHEMA_VERSION
    if store.engine.dialect.name == "sqlite":
        with store.engine.connect() as conn:
            assert conn.exec_driver_sql("PRAGMA journal_mode").scalar() == "wal"


def test_default_url_is_a_file_in_iterflow_home(home):
    url = default_url()
    assert url == f"sqlite:///{home.resolve() / 'iterflow.db'}"
    assert home.is_dir()
    with open_store() as store:
        assert store.name == str(home.resolve() / "iterflow.db")
    assert (home / "iterflow.db").exists()


def test_store_url_comes_from_the_environment(tmp_path, monkeypatch, home):
    monkeypatch.setenv("ITERFLOW_STORE_URL", f"sqlite:///{tmp_path / 'elsewhere.db'}")
    with open_store() as store:
        assert store.name.endswith("elsewhere.db")
    assert not (home / "iterflow.db").exists()


def test_reopening_keeps_the_data(store_url):
    with open_store(store_url) as store:
        sink = store.sink()
        run = RunEvents(sink)
        run.start()
        run.finish()
        sink.close()
    with open_store(store_url) as again:
        assert [r.run_id for r in again.list_runs()] == [run.run_id]


def test_a_file_that_is_not_a_database_is_refused_untouched(tmp_path):
    path = tmp_path / "notes.db"
    path.write_bytes(b"these are my notes, not a database\n" * 20)
    before = digest(path)
    with pytest.raises(StoreError) as caught:
        open_store(f"sqlite:///{path}")
    message = str(caught.value)
    assert str(path) in message and "not a SQLite database" in message
    assert "ITERFLOW_STORE_URL" in message
    assert digest(path) == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["notes.db"]


def test_a_directory_is_refused(tmp_path):
    with pytest.raises(StoreError, match="is a directory"):
        open_store(f"sqlite:///{tmp_path}")


def test_another_applications_sqlite_file_is_refused_untouched(tmp_path):
    path = tmp_path / "app.db"
    with sqlite3.connect(path) as conn:
        conn.execute("CREATE TABLE customers (id INTEGER PRIMARY KEY)")
    before = digest(path)
    with pytest.raises(StoreError, match=r"not an iterflow run store.*customers"):
        open_store(f"sqlite:///{path}")
    assert digest(path) == before


def test_in_memory_sqlite_is_refused():
    with pytest.raises(StoreError, match="in-memory"):
        open_store("sqlite://")


def test_a_bad_url_is_a_store_error():
    with pytest.raises(StoreError, match="not a valid store URL"):
        open_store("not a url")


def test_a_newer_schema_is_refused_before_anything_is_written(store_url):
    open_store(store_url).close()
    set_version(store_url, SCHEMA_VERSION + 1)
    path = None
    if store_url.startswith("sqlite"):
        path = Path(sa.engine.make_url(store_url).database)
        with sqlite3.connect(path) as conn:  # fold the WAL in, so the file says it all
            conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        before = digest(path)
    with pytest.raises(StoreError) as caught:
        open_store(store_url)
    message = str(caught.value)
    assert "newer iterflow" in message
    assert f"schema version {SCHEMA_VERSION + 1}" in message
    if path is not None:
        assert str(path) in message
        assert digest(path) == before
    else:
        assert "postgresql+psycopg://" in message


def _add_note_column(conn: sa.Connection) -> None:
    conn.exec_driver_sql("ALTER TABLE task_runs ADD COLUMN note TEXT")
    conn.exec_driver_sql("UPDATE task_runs SET note = 'migrated'")


def _broken_migration(conn: sa.Connection) -> None:
    conn.exec_driver_sql("ALTER TABLE task_runs ADD COLUMN note TEXT")
    raise RuntimeError("halfway")


def test_an_older_store_is_migrated_in_order(store_url):
    # Play a future release: this code's version is the "old" one, and the
    # future adds one migration. The store is upgraded on open, data kept.
    with open_store(store_url) as store:
        sink = store.sink()
        run = RunEvents(sink)
        run.start()
        run.loop("t", [1, 2], final=3)
        sink.close()
    steps: list[int] = []

    def step_next(conn):
        steps.append(SCHEMA_VERSION + 1)
        _add_note_column(conn)

    future = (*MIGRATIONS, step_next)
    with RunStore(store_url, migrations=future) as upgraded:
        assert upgraded.schema_version == SCHEMA_VERSION + 1
        with upgraded.engine.connect() as conn:
            version = conn.exec_driver_sql("SELECT version FROM schema_version").scalar()
            assert version == SCHEMA_VERSION + 1
            assert conn.exec_driver_sql("SELECT note FROM task_runs").scalar() == "migrated"
        assert [h.loop_index for h in upgraded.iterations(run.run_id, "t")] == [0, 1, 2]
    # Opening again runs nothing: the store is already there.
    with RunStore(store_url, migrations=future):
        pass
    assert steps == [SCHEMA_VERSION + 1]
    # And the code that knows only this version now refuses the upgraded store.
    with pytest.raises(StoreError, match="newer iterflow"):
        open_store(store_url)


def test_a_failing_migration_leaves_the_store_unchanged(store_url):
    open_store(store_url).close()
    v = SCHEMA_VERSION
    with pytest.raises(StoreError, match=rf"from schema version {v} to {v + 1} failed.*halfway"):
        RunStore(store_url, migrations=(*MIGRATIONS, _broken_migration))
    with open_store(store_url) as store:
        columns = {c["name"] for c in sa.inspect(store.engine).get_columns("task_runs")}
        assert "note" not in columns
        assert store.schema_version == SCHEMA_VERSION


def test_a_new_store_is_created_at_the_newest_version_without_migrating(store_url):
    # Every migration would fail: a new store must not run any of them.
    with RunStore(store_url, migrations=tuple(_broken_migration for _ in MIGRATIONS)) as store:
        assert store.schema_version == SCHEMA_VERSION
        assert set(metadata.tables) <= set(sa.inspect(store.engine).get_table_names())


def test_opening_a_store_at_the_newest_version_only_reads(store_url):
    open_store(store_url).close()
    statements: list[str] = []

    def seen(conn, cursor, statement, *args):
        statements.append(statement.strip().split()[0].upper())

    sa.event.listen(sa.Engine, "before_cursor_execute", seen)
    try:
        open_store(store_url).close()
    finally:
        sa.event.remove(sa.Engine, "before_cursor_execute", seen)
    # The version (and, for the check, the tables' names): no DDL, no write.
    assert statements and set(statements) == {"SELECT"}, statements


def test_an_older_store_opened_read_only_says_its_version(store_url):
    open_store(store_url).close()
    set_version(store_url, SCHEMA_VERSION - 1)
    with pytest.raises(StoreError, match=rf"at schema version {SCHEMA_VERSION - 1} and read-only"):
        RunStore(store_url, read_only=True)


def test_importing_iterflow_does_not_import_sqlalchemy():
    code = (
        "import sys, iterflow, iterflow.store\n"
        "assert 'sqlalchemy' not in sys.modules, 'sqlalchemy imported'\n"
        "iterflow.store.open_store\n"
        "assert 'sqlalchemy' in sys.modules\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=60)

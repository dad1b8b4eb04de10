"""Text a database refuses (a NUL, a lone surrogate) fails nothing: it is recorded escaped.

PostgreSQL's text types cannot hold NUL; psycopg refused the string and the
whole batch with it, so one exception message holding ``\x00`` failed the
run's recording ("The run store ... failed: DataError"). There the store now
writes U+FFFD in its place; SQLite keeps the text as it was given.

A lone surrogate (``"\udcff"``, how Python decodes a file name's undecodable
bytes) cannot be encoded as UTF-8 at all: both drivers refused it. The store
now writes it as the escape ``\udcff``, on both.
"""

from __future__ import annotations

import functools

import pytest
import sqlalchemy as sa
from psycopg.adapt import PyFormat

import iterflow
from iterflow import LOOP, Flow, task
from iterflow import store as st
from iterflow.store import db
from iterflow.store.pg_text import NUL_REPLACEMENT, NulFreeText
from tests.backends import PG_URL, postgres_schema

# Each kind of text: what a run puts in it, and how the store gives it back on a backend.
TEXTS = {
    # SQLite keeps a NUL; PostgreSQL cannot hold one.
    "nul": ("a\x00b", lambda url: "a\x00b" if url.startswith("sqlite") else
            "a" + NUL_REPLACEMENT + "b"),
    # os.listdir() gives such a name for a file whose name is not UTF-8.
    "surrogate": (b"report-\xff.csv".decode("utf-8", "surrogateescape"),
                  lambda url: "report-\\udcff.csv"),
}


@pytest.mark.parametrize("kind", TEXTS)
def test_refused_text_is_recorded_escaped_and_the_run_ends_as_it_should(store_url, kind):
    given, recorded_on = TEXTS[kind]
    shown = recorded_on(store_url)

    @task(task_run_name="read {path}")
    def read(path):
        i = iterflow.context.loop_index
        iterflow.set_iteration_label(f"{path} part {i}")
        iterflow.context.logger.warning("reading %s", path)
        if i < 2:
            raise LOOP(message=f"more of {path}", result=path)
        return path

    @task
    def parse(text):
        raise ValueError(f"cannot parse {text}")

    with Flow("odd text") as flow:
        parse(read(given))

    assert flow.run(store=store_url).is_failed()
    [run] = st.list_runs(store=store_url)
    assert run.state == "Failed"
    runs = {t.task_name: t for t in st.task_runs(run.run_id, store=store_url)}
    assert (runs["read"].state, runs["read"].loop_count) == ("Success", 3)
    assert runs["read"].task_run_name == f"read {shown}"
    assert runs["parse"].state == "Failed"

    steps = st.iterations(run.run_id, "read", store=store_url)
    assert [s.label for s in steps] == [f"{shown} part {i}" for i in range(3)]
    looped = [s for s in steps if s.state == "Looped"]
    assert [s.message for s in looped] == [f"more of {shown}"] * 2
    # The results themselves are pickled: given back exactly, as they were.
    assert st.load_result(looped[0].result_id, store=store_url) == given
    [failed] = [s for s in st.iterations(run.run_id, "parse", store=store_url)
                if s.state == "Failed"]
    assert f"cannot parse {shown}" in failed.message
    logged = [e.message for e in st.logs(run.run_id, store=store_url) if "reading" in e.message]
    assert logged == [f"reading {shown}"] * 3


@pytest.mark.skipif(not PG_URL, reason="ITERFLOW_TEST_POSTGRES_URL is not set")
def test_postgres_pays_for_nul_free_text_only_once_a_nul_was_refused():
    # The replacing dumpers cost a Python call per string: until a NUL comes, the
    # store's connections keep psycopg's own; from then on, every one of them (a
    # pooled one, a writer's kept one) writes U+FFFD, and the refused write is retried.
    def dumper(conn: sa.Connection) -> type:
        return conn.connection.driver_connection.adapters.get_dumper(str, PyFormat.TEXT)

    def insert(body: str):
        return lambda conn: conn.execute(sa.text("INSERT INTO notes VALUES (:body)"),
                                         {"body": body})

    with postgres_schema("nul") as url:
        engine = db.create_engine(url, lock_timeout=5)
        kept = db.write_connection(engine)
        try:
            write = functools.partial(db.write, engine, name=url, lock_timeout=5)
            write(lambda conn: conn.exec_driver_sql("CREATE TABLE notes (body text)"))
            write(insert("plain"))
            write(insert("plain too"), connection=kept)
            assert dumper(kept) is not NulFreeText
            with engine.connect() as conn:
                assert dumper(conn) is not NulFreeText

            write(insert("kept \x00 one"), connection=kept)
            assert dumper(kept) is NulFreeText
            write(insert("pooled \x00 one"))
            with engine.connect() as conn:
                assert dumper(conn) is NulFreeText
                bodies = list(conn.execute(sa.text("SELECT body FROM notes")).scalars())
            assert bodies == ["plain", "plain too", "kept \ufffd one", "pooled \ufffd one"]
        finally:
            kept.close()
            engine.dispose()

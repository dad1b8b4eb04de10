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


def _as_recorded(text: str, url: str) -> str:
    return text if url.startswith("sqlite") else text.replace("\x00", NUL_REPLACEMENT)


def test_text_holding_nul_is_recorded_and_the_run_ends_as_it_should(store_url):
    @task(task_run_name="fetch {page}")
    def fetch(page):
        i = iterflow.context.loop_index
        iterflow.set_iteration_label(f"page\x00{i}")
        iterflow.context.logger.warning("got \x00 bytes on page %d", i)
        if i < 2:
            raise LOOP(message=f"more\x00{i}", result=f"body\x00{i}")
        return "last\x00page"

    @task
    def parse(body):
        raise ValueError(f"cannot parse {body!s}")

    with Flow("nul text") as flow:
        parse(fetch("a\x00b"))

    state = flow.run(store=store_url)
    assert state.is_failed()

    [run] = st.list_runs(store=store_url)
    assert run.state == "Failed"
    runs = {t.task_name: t for t in st.task_runs(run.run_id, store=store_url)}
    assert runs["fetch"].state == "Success" and runs["fetch"].loop_count == 3
    assert runs["fetch"].task_run_name == _as_recorded("fetch a\x00b", store_url)
    assert runs["parse"].state == "Failed"

    steps = st.iterations(run.run_id, "fetch", store=store_url)
    looped = [s for s in steps if s.state == "Looped"]
    assert [s.message for s in looped] == [_as_recorded(f"more\x00{i}", store_url)
                                           for i in range(2)]
    assert [s.label for s in steps if s.label] == [_as_recorded(f"page\x00{i}", store_url)
                                                   for i in range(3)]
    # The results themselves are bytes: given back exactly, NUL included.
    assert st.load_result(looped[0].result_id, store=store_url) == "body\x000"

    [failed] = [s for s in st.iterations(run.run_id, "parse", store=store_url)
                if s.state == "Failed"]
    assert _as_recorded("cannot parse last\x00page", store_url) in failed.message
    logged = st.logs(run.run_id, store=store_url)
    lines = [e.message for e in logged if "bytes on page" in e.message]
    assert lines == [_as_recorded(f"got \x00 bytes on page {i}", store_url) for i in range(3)]


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


def test_a_lone_surrogate_in_recorded_text_is_written_as_its_escape(store_url):
    # os.listdir() gives such names for files whose names are not UTF-8.
    name = b"report-\xff.csv".decode("utf-8", "surrogateescape")

    @task(task_run_name="read {path}")
    def read(path):
        i = iterflow.context.loop_index
        iterflow.set_iteration_label(f"{path} part {i}")
        iterflow.context.logger.warning("reading %s", path)
        if i < 1:
            raise LOOP(message=f"more of {path}", result=path)
        raise OSError(f"cannot read {path}")

    with Flow("odd names") as flow:
        read(name)

    assert flow.run(store=store_url).is_failed()
    escaped = "report-\\udcff.csv"
    [run] = st.list_runs(store=store_url)
    assert run.state == "Failed"
    [task_run] = st.task_runs(run.run_id, store=store_url)
    assert (task_run.state, task_run.task_run_name) == ("Failed", f"read {escaped}")
    steps = st.iterations(run.run_id, "read", store=store_url)
    assert [s.label for s in steps] == [f"{escaped} part 0", f"{escaped} part 1"]
    assert steps[0].message == f"more of {escaped}"
    assert f"cannot read {escaped}" in steps[-1].message
    # The result itself is pickled: given back exactly, surrogate included.
    assert st.load_result(steps[0].result_id, store=store_url) == name
    logged = [e.message for e in st.logs(run.run_id, store=store_url) if "reading" in e.message]
    assert logged == [f"reading {escaped}"] * 2

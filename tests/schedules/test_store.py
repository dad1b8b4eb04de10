"""The schedule tables: their migration on a store with runs in it, triggers, hooks."""

from __future__ import annotations

import sqlalchemy as sa

from iterflow import FAIL, Flow, task
from iterflow.store import RunStore, list_runs, open_store, ticks, triggers
from iterflow.store.migrations import MIGRATIONS, _add_schedule_tables
from iterflow.store.schema import metadata
from iterflow.store.serving import claim_ticks

OURS = ("schedule_ticks", "serve_leases", "run_triggers")


@task
def one():
    return 1


@task
def boom():
    raise FAIL("no luck")


def test_migration_adds_the_tables_to_a_store_with_runs(tmp_path, monkeypatch):
    monkeypatch.setenv("ITERFLOW_HOME", str(tmp_path / "home"))
    url = f"sqlite:///{tmp_path / 'old.db'}"
    mine = MIGRATIONS.index(_add_schedule_tables)
    # The store as it was before this migration: at its version, without its tables.
    before = RunStore(url, migrations=MIGRATIONS[:mine])
    with Flow("old") as flow:
        one()
    run_id = flow.run(store=before).run_id
    with before.engine.begin() as conn:
        for name in OURS:
            conn.exec_driver_sql(f"DROP TABLE {name}")
    before.close()

    after = RunStore(url, migrations=MIGRATIONS[: mine + 1])
    assert after.schema_version == mine + 2
    inspector = sa.inspect(after.engine)
    for name in OURS:
        table = metadata.tables[name]
        assert {c["name"] for c in inspector.get_columns(name)} == set(table.c.keys())
        assert {i["name"] for i in inspector.get_indexes(name)} == {i.name for i in table.indexes}
    assert [r.run_id for r in list_runs(store=after)] == [run_id]
    assert triggers([run_id], store=after)[run_id].kind == "manual"
    row = {"flow_name": "old", "schedule": "s", "scheduled": 1.0, "outcome": "missed"}
    assert claim_ticks(after, [row, row]) == [True, False]
    after.close()
    newest = open_store(url)  # and on to the newest version, whatever follows
    assert [t.outcome for t in ticks("old", store=newest)] == ["missed"]
    newest.close()


def test_resume_is_recorded_as_a_trigger(tmp_path):
    store = open_store(f"sqlite:///{tmp_path / 's.db'}")
    calls = []

    with Flow("flaky", on_failure=[lambda flow, state: calls.append((flow.name, state))]) as flow:
        boom()
    state = flow.run(store=store)
    assert state.is_failed() and calls == [("flaky", state)]
    flow.run(store=store, resume=state.run_id)
    info = triggers([state.run_id], store=store)[state.run_id]
    assert (info.kind, info.resumes) == ("resume", 1)
    store.close()


def test_a_failing_hook_is_logged_not_raised(caplog):
    def broken(flow, state):
        raise RuntimeError("mail server down")

    with Flow("f", on_failure=[broken]) as flow:
        boom()
    with caplog.at_level("ERROR", logger="iterflow.runtime"):
        assert flow.run(store=None).is_failed()
    assert "on_failure hook" in caplog.text and "mail server down" in caplog.text
    with Flow("g", on_failure=[broken]) as fine:
        one()
    assert fine.run(store=None).is_successful()  # not called for a success

"""A batch's flow-level rows: flows, flow runs (their states folded), shapes.

:class:`~iterflow.store.batch.BatchRecorder` hands each FLOW record to
:func:`write_flow`, which adds its rows to the batch's ``BatchRows`` (``rows``
below: its ``flows``, ``flow_runs``, ``shapes``, ``flow_states`` and
``results``); :func:`write_flow_rows` then writes them, a statement per kind
of row. A batch of child runs (subflows) holds hundreds of flow-run states,
so this is written for many small runs at once: a run new to the store that
starts and ends in the batch (a child run, most often) is one ``flow_runs``
row, its end merged into its start's row as it comes, and no state rows (that
row holds its start, end, final state and message; nobody reads a flow run's
history from ``state_transitions``).
"""

from __future__ import annotations

import json
import operator
import time
from typing import Any

import sqlalchemy as sa

from iterflow.store.liveness import HOST, driver_pid
from iterflow.store.schema import flow_run_shapes, flow_runs, flows
from iterflow.store.statements import FastInsert, insert_flow_states, upsert

__all__ = ["write_flow", "write_flow_rows"]

# How a flow-run state's row updates the run's (see statements.upsert), by whether
# it carries the parameters (the first state) and whether the run ended. Shared:
# read-only.
_FLOW_RUN_BASE = {"id": "old", "flow_name": "new", "state": "new", "message": "new",
                  "ended": "new", "started": "old", "source": "new_or_old"}
_FLOW_RUN_RULES = {
    (has_params, finished): {
        **_FLOW_RUN_BASE,
        **({"parameters": "old", "parameters_result_id": "old"} if has_params else {}),
        **({} if finished else {"pid": "new", "host": "new", "heartbeat": "new", "owner": "new"}),
    }
    for has_params in (False, True) for finished in (False, True)
}


def write_flow(
    record: tuple[Any, ...],
    run_key: int,
    next_id: int,
    rows: Any,
    runs: dict[str, None],
    owner: str,
) -> int:
    """Add the rows of a FLOW record to ``rows`` (:func:`write_flow_rows`); return the next id."""
    (_, run_id, flow_name, kind, at, message, params_json, params_stored, tasks, source,
     finished, shape, _signal) = record
    if finished and run_id in rows.flow_opening and params_json is None and tasks is None:
        # A run new to the store that started in this batch ends here (a child run):
        # its flow_runs row (started, ended, state, message) is its whole history, so
        # neither state becomes a row. The start's row takes the end's columns, as
        # _fold would: the run has no row (looked up in this transaction), so the
        # upsert inserts it, and its rules (the start's) would matter only on a conflict.
        _state_row, row = rows.flow_opening.pop(run_id)
        row["flow_name"], row["state"], row["message"], row["ended"] = (
            flow_name, kind, message, at)
        if source is not None:
            row["source"] = source
        if shape is not None:
            rows.shapes[run_id] = {"run_id": run_id, "shape": shape}
        runs.pop(run_id, None)
        return next_id + 1  # the state's id, unused
    if tasks is not None:
        known = rows.flows.get(flow_name)
        rows.flows[flow_name] = {"name": flow_name, "created": known["created"] if known else at,
                                 "updated": at, "tasks": tasks}
    row_id = next_id
    next_id += 1
    row: dict[str, Any] = {
        "run_id": run_id, "id": run_key, "flow_name": flow_name, "state": kind, "started": at,
        "message": message, "ended": at if finished else None, "source": source,
    }
    has_params = params_json is not None
    if has_params:
        # A resumed run sends the original parameters again: keep the first record.
        row["parameters"] = params_json
        row["parameters_result_id"] = None
        if params_stored is not None:
            row["parameters_result_id"] = next_id
            rows.results.append((next_id, *params_stored))
            next_id += 1
    if finished:
        runs.pop(run_id, None)
    else:
        row.update(pid=driver_pid(), host=HOST, heartbeat=time.time(), owner=owner)
        runs[run_id] = None
    rules = _FLOW_RUN_RULES[has_params, finished]
    rows.flow_runs.append((run_id, rules, row))
    if shape is not None:
        rows.shapes[run_id] = {"run_id": run_id, "shape": shape}
    state_row = (row_id, run_key, kind, message, at)
    if run_id not in rows.fresh_runs:
        rows.flow_states.append(state_row)
    elif (kind == "Running" and message in (None, "running") and not finished
          and run_id not in rows.flow_opening):
        # A new run's start: history only if the run goes on past this batch.
        rows.flow_opening[run_id] = (state_row, row)
    else:  # anything else of a new run: its start first, if held
        opening = rows.flow_opening.pop(run_id, None)
        if opening is not None:
            rows.flow_states.append(opening[0])
        rows.flow_states.append(state_row)
    return next_id


def write_flow_rows(conn: sa.Connection, rows: Any) -> None:
    """Upsert a batch's flows, flow runs and their shapes: a statement per kind of row.

    A batch of child runs holds hundreds of flow-run states; one statement
    each cost more than the rest of the batch. A flow run's states in one
    batch (a child run's start and end, most often) are folded into one row
    (:func:`_fold`), so each run's row is written once, not once per state;
    states that cannot be folded go in *stages* (a run's first row of the
    batch in the first statement, its second in the next, ...), so that no
    statement names a run twice (PostgreSQL refuses an upsert that touches a
    row twice). On SQLite the rows go in as padded multi-row statements
    (:class:`~iterflow.store.statements.FastInsert`).
    """
    # A new run's start is history only if the run is still going at the batch's end.
    rows.flow_states.extend(state_row for state_row, _row in rows.flow_opening.values())
    rows.flow_opening.clear()
    fast = conn.dialect.name == "sqlite"
    if rows.flows:
        if fast:
            # The task list as the JSON column stores it, encoded once per list (_json_text).
            _fast_upsert(flows, "name", _FLOW_COLUMNS, _FLOW_RULES).run(conn, [
                (row["name"], row["created"], row["updated"], _json_text("tasks", row["tasks"]))
                for row in rows.flows.values()
            ])
        else:
            upsert(conn, flows, "name", list(rows.flows.values()), dict(_FLOW_RULES))
    stages: list[dict[str, tuple[dict[str, str], dict[str, Any]]]] = [{}]
    for run_id, rules, row in rows.flow_runs:
        stage = 0
        while True:
            if stage == len(stages):
                stages.append({})
            known = stages[stage].get(run_id)
            if known is None:
                stages[stage][run_id] = (rules, row)
                break
            folded = _fold(known, rules, row)
            if folded is not None:
                stages[stage][run_id] = folded
                break
            stage += 1
    for stage_rows in stages:
        groups: dict[tuple[Any, ...], list[dict[str, Any]]] = {}
        for rules, row in stage_rows.values():
            groups.setdefault((tuple(rules.items()), tuple(row)), []).append(row)
        for (rules, columns), same in groups.items():
            if fast:
                statement = _fast_upsert(flow_runs, "run_id", columns, rules)
                statement.run(conn, [_row_values(row, columns) for row in same])
            else:
                upsert(conn, flow_runs, "run_id", same, dict(rules))
    insert_flow_states.run(conn, rows.flow_states)
    if rows.shapes:
        shapes = list(rows.shapes.values())
        if fast:
            # A map of child runs sends one shape object (derived per graph) for all.
            statement = _fast_upsert(flow_run_shapes, "run_id", ("run_id", "shape"),
                                     (("shape", "new"),))
            statement.run(conn, [(row["run_id"], _json_text("shape", row["shape"]))
                                 for row in shapes])
        else:
            upsert(conn, flow_run_shapes, "run_id", shapes, {"shape": "new"})


def _fold(
    known: tuple[dict[str, str], dict[str, Any]], rules: dict[str, str], row: dict[str, Any]
) -> tuple[dict[str, str], dict[str, Any]] | None:
    """One upsert doing what ``known`` (rules, row) and then ``rules``/``row`` would do.

    None when no single upsert can (a column kept if set, after one taken
    unless NULL): that state goes in a later stage.
    """
    old_rules, old_row = known
    merged_rules, merged_row = dict(old_rules), dict(old_row)
    for column, rule in rules.items():
        value = row[column]
        before = old_rules.get(column)
        if before is None or rule == "new":
            merged_rules[column], merged_row[column] = rule, value
        elif rule == "new_or_old":
            if value is not None:
                merged_rules[column], merged_row[column] = "new", value
        elif before in ("old", "new"):  # rule "old": the earlier value, unless NULL
            if old_row[column] is None:
                merged_row[column] = value
        else:  # "new_or_old" then "old": depends on what the row held
            return None
    return merged_rules, merged_row


# The flows row, on SQLite: its columns, and how an upsert treats each.
_FLOW_COLUMNS = ("name", "created", "updated", "tasks")
_FLOW_RULES = (("created", "old"), ("updated", "new"), ("tasks", "new"))

# Per kind ("tasks", "shape"): the last value _json_text encoded, and its text.
_LAST_TEXT: dict[str, tuple[Any, str]] = {}


def _json_text(kind: str, value: Any) -> str:
    """``json.dumps(value)`` (as a JSON column stores it), reused while ``value`` comes again.

    Every run writes its flow's task list and shape with its first state, which
    its caller waits for: for a flow of a thousand tasks, encoding them cost
    that commit most of its time. A process runs the same flow again and
    again — the same object (its shape and task list are derived once per
    graph, see ``core.memo``), or a new one built the same way, whose values
    compare equal (in a fraction of the time encoding takes). Both are
    read-only: a flow's derived values are never changed in place.
    """
    last = _LAST_TEXT.get(kind)
    if last is not None and (last[0] is value or last[0] == value):
        return last[1]
    text = json.dumps(value)
    _LAST_TEXT[kind] = (value, text)
    return text


# JSON columns of the flow-level rows: on SQLite they go in as text (see _row_values).
_JSON_COLUMNS = frozenset({"parameters"})
_FAST_UPSERTS: dict[tuple[Any, ...], FastInsert] = {}


def _row_values(row: dict[str, Any], columns: tuple[str, ...]) -> tuple[Any, ...]:
    """``row`` as a tuple in ``columns`` order, JSON columns as the JSON type stores them."""
    pick = _PICKERS.get(columns)
    if pick is None:
        pick = _PICKERS[columns] = (
            operator.itemgetter(*columns) if len(columns) > 1 else lambda r: (r[columns[0]],),
            tuple(i for i, c in enumerate(columns) if c in _JSON_COLUMNS),
        )
    getter, json_at = pick
    values = getter(row)
    if not json_at:
        return values  # type: ignore[no-any-return]
    # A run's first row (its parameters): a child run each, so picked in C above.
    out = list(values)
    for i in json_at:
        if out[i] is not None:
            out[i] = json.dumps(out[i])
    return tuple(out)


# Per tuple of columns: a getter of their values from a row, and where the JSON ones are.
_PICKERS: dict[tuple[str, ...], tuple[Any, tuple[int, ...]]] = {}


def _fast_upsert(
    table: sa.Table, key: str, columns: tuple[str, ...], rules: tuple[tuple[str, str], ...]
) -> FastInsert:
    """The SQLite upsert of ``columns`` following ``rules``, built once per shape of row."""
    cache_key = (table.name, columns, rules)
    statement = _FAST_UPSERTS.get(cache_key)
    if statement is None:
        statement = _FAST_UPSERTS[cache_key] = FastInsert(
            table, columns, upsert=(key, dict(rules)))
    return statement

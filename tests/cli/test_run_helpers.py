"""What ``iterflow run`` does before running: load the file, read ``-p``, pick an executor."""

from __future__ import annotations

import click
import pytest

from iterflow import Flow
from iterflow.cli.common import EXIT_FAILED, EXIT_USAGE, CliError
from iterflow.cli.run import load_flow, make_executor, parse_parameters
from iterflow.executors import LocalExecutor, ThreadExecutor

ONE_FLOW = """
    from iterflow import Flow, task

    @task
    def a():
        return 1

    with Flow("one") as flow:
        a()
    alias = flow          # the same flow under a second name is still one flow
"""

TWO_FLOWS = """
    from iterflow import Flow, task

    @task
    def a():
        return 1

    with Flow("first") as etl:
        a()
    with Flow("second") as report:
        a()
"""


# -- load_flow ---------------------------------------------------------------------
def test_the_only_flow_is_found_and_its_source_recorded(flow_file):
    path = flow_file("one.py", ONE_FLOW)
    loaded = load_flow(str(path))
    assert isinstance(loaded.flow, Flow) and loaded.flow.name == "one"
    assert loaded.variable == "flow"
    assert loaded.source == f"{path.resolve()}:flow"


def test_a_relative_path_is_recorded_absolute(flow_file, tmp_path, monkeypatch):
    flow_file("one.py", ONE_FLOW)
    monkeypatch.chdir(tmp_path)
    assert load_flow("one.py:flow").source == f"{(tmp_path / 'one.py').resolve()}:flow"


def test_a_flow_is_picked_by_variable_name(flow_file):
    path = flow_file("two.py", TWO_FLOWS)
    assert load_flow(f"{path}:report").flow.name == "second"


def test_several_flows_without_a_name_is_an_error_listing_them(flow_file):
    path = flow_file("two.py", TWO_FLOWS)
    with pytest.raises(CliError) as info:
        load_flow(str(path))
    assert info.value.exit_code == EXIT_USAGE
    assert "etl (Flow 'first')" in info.value.message
    assert "report (Flow 'second')" in info.value.message
    assert f"{path}:etl" in info.value.hint


def test_a_file_without_a_flow_is_an_error(flow_file):
    path = flow_file("none.py", "x = 1\n")
    with pytest.raises(CliError, match="defines no module-level Flow") as info:
        load_flow(str(path))
    assert info.value.exit_code == EXIT_USAGE


def test_a_missing_file_is_a_usage_error(tmp_path):
    with pytest.raises(CliError, match="no such file") as info:
        load_flow(str(tmp_path / "nope.py"))
    assert info.value.exit_code == EXIT_USAGE


def test_a_directory_is_a_usage_error(tmp_path):
    with pytest.raises(CliError, match="is a directory") as info:
        load_flow(str(tmp_path))
    assert info.value.exit_code == EXIT_USAGE


def test_an_unknown_variable_names_the_flows_there_are(flow_file):
    path = flow_file("two.py", TWO_FLOWS)
    with pytest.raises(CliError, match="has no variable 'nope'") as info:
        load_flow(f"{path}:nope")
    assert "etl" in info.value.hint and "report" in info.value.hint


def test_a_variable_that_is_not_a_flow_is_refused(flow_file):
    path = flow_file("two.py", TWO_FLOWS)
    with pytest.raises(CliError, match=r"'a' in .* is a FunctionTask, not a Flow"):
        load_flow(f"{path}:a")


def test_an_import_error_in_the_file_is_one_line(flow_file):
    path = flow_file("broken.py", "import no_such_module_anywhere\n")
    with pytest.raises(CliError, match="ModuleNotFoundError") as info:
        load_flow(str(path))
    assert info.value.exit_code == EXIT_FAILED


def test_a_syntax_error_names_the_line(flow_file):
    path = flow_file("syntax.py", "x = 1\ndef (:\n")
    with pytest.raises(CliError, match=r"syntax\.py:2: syntax error"):
        load_flow(str(path))


def test_sibling_modules_import_as_with_python_file(flow_file):
    flow_file("helper_mod_for_cli_test.py", "VALUE = 41\n")
    path = flow_file(
        "uses_helper.py",
        """
        from helper_mod_for_cli_test import VALUE
        from iterflow import Flow, task

        @task
        def plus_one():
            return VALUE + 1

        with Flow("sibling") as flow:
            plus_one()
        """,
    )
    state = load_flow(str(path)).flow.run(store=None)
    assert [s.result for s in state.result.values()] == [42]


def test_the_main_block_of_the_file_does_not_run(flow_file):
    path = flow_file(
        "guarded.py",
        """
        from iterflow import Flow, task

        @task
        def a():
            return 1

        with Flow("guarded") as flow:
            a()

        if __name__ == "__main__":
            raise SystemExit("the file was run as a script")
        """,
    )
    assert load_flow(str(path)).flow.name == "guarded"


# -- parse_parameters -----------------------------------------------------------------
def test_values_are_json_where_they_parse_and_text_otherwise():
    assert parse_parameters(
        ["n=10", "ratio=0.5", "on=true", "items=[1, 2]", "cfg={\"a\": null}", "name=ada",
         "quoted=\"7\"", "empty=", "eq=a=b"]
    ) == {
        "n": 10, "ratio": 0.5, "on": True, "items": [1, 2], "cfg": {"a": None}, "name": "ada",
        "quoted": "7", "empty": "", "eq": "a=b",
    }


@pytest.mark.parametrize("bad", ["n", "=5", " =5"])
def test_a_parameter_without_key_or_equals_is_a_usage_error(bad):
    with pytest.raises(click.BadParameter, match="KEY=VALUE"):
        parse_parameters([bad])


def test_a_parameter_given_twice_is_a_usage_error():
    with pytest.raises(click.BadParameter, match="given twice"):
        parse_parameters(["n=1", "n=2"])


# -- make_executor ------------------------------------------------------------------------
def test_executors_by_name():
    assert make_executor(None) is None
    assert isinstance(make_executor("local"), LocalExecutor)
    assert isinstance(make_executor("threads"), ThreadExecutor)
    threads = make_executor("threads=3")
    assert isinstance(threads, ThreadExecutor) and threads.max_workers == 3


@pytest.mark.parametrize("bad", ["gpu", "threads=0", "threads=many", "local=1"])
def test_an_unknown_executor_is_a_usage_error(bad):
    with pytest.raises(click.BadParameter):
        make_executor(bad)

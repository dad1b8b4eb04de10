# Two commands do everything (see README):
#   make run   — set up a virtual environment and run the looping example
#   make test  — set up everything the tests need and run the whole suite
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: run test lint bench clean

$(STAMP): pyproject.toml
	python3 -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e ".[dev]"
	touch $(STAMP)

run: $(STAMP)
	ITERFLOW_HOME=$${ITERFLOW_HOME:-.iterflow} $(PY) examples/accumulate.py
	@ITERFLOW_HOME=$${ITERFLOW_HOME:-.iterflow} $(PY) -c "from iterflow.store import list_runs; \
	run = list_runs(limit=1)[0].run_id; \
	print('Look at it in the dashboard:'); \
	print('  ITERFLOW_HOME=$${ITERFLOW_HOME:-.iterflow} $(VENV)/bin/iterflow ui'); \
	print(f'  then open http://127.0.0.1:4200/runs/{run}')"

test: $(STAMP)
	$(VENV)/bin/ruff check src tests benchmarks examples
	$(VENV)/bin/mypy
	bash .ci/services.sh $(VENV)/bin/pytest -q

lint: $(STAMP)
	$(VENV)/bin/ruff check src tests benchmarks examples
	$(VENV)/bin/mypy

bench: $(STAMP)
	$(PY) benchmarks/loop_overhead.py

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache build *.egg-info

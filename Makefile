# market-data-store: the two commands a newcomer needs are `make run` and `make test`.
PYTHON ?= python3
VENV   ?= .venv
PY      = $(VENV)/bin/python

.PHONY: run test lint test-timescale venv venv-runtime bench clean

## run: the API and one worker in the foreground (starts local Postgres/Redis if needed);
## installs only the runtime dependencies (requirements.txt)
run: venv-runtime
	./scripts/run-local.sh

## test: the whole test suite against real Postgres, Redis, gunicorn and workers
test: venv
	$(PY) -m pytest

## lint: ruff (lint + format check) and mypy, as CI runs them
lint: venv
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/mypy

## test-timescale: only the TimescaleDB-marked tests (skipped where the extension is absent)
test-timescale: venv
	$(PY) -m pytest -m timescaledb

## bench: every benchmark script (prints ratios against a baseline)
bench: venv
	for script in bench/*.py; do $(PY) $$script || exit 1; done

venv: $(VENV)/.installed

venv-runtime: $(VENV)/.installed-runtime

$(VENV)/.installed: requirements.txt requirements-dev.txt pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --disable-pip-version-check -r requirements-dev.txt
	# the project itself, editable: puts the `mds` command in $(VENV)/bin
	$(PY) -m pip install -q --disable-pip-version-check --no-deps -e .
	touch $@ $(VENV)/.installed-runtime

$(VENV)/.installed-runtime: requirements.txt pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --disable-pip-version-check -r requirements.txt
	$(PY) -m pip install -q --disable-pip-version-check --no-deps -e .
	touch $@

clean:
	rm -rf $(VENV) .local .pytest_cache

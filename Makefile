# The README's two commands: `make run` and `make test`.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
HOST ?= 127.0.0.1
PORT ?= 8010

.PHONY: install run test bench doctor clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip

$(VENV)/.installed: pyproject.toml | $(BIN)/python
	$(BIN)/pip install --quiet -e '.[test]'
	touch $@

install: $(VENV)/.installed  ## create .venv and install the package with its test tools

run: install  ## serve on the embedded default (local dir + SQLite) at 127.0.0.1:8010
	$(BIN)/engines serve --host $(HOST) --port $(PORT)

test: install  ## lint, then the whole suite: unit, contract (local+SQLite, S3+PostgreSQL), end to end
	$(BIN)/ruff check engines tests bench conftest.py
	$(BIN)/python -m pytest -n 2 --dist loadgroup -q

bench: install  ## the benchmark table (see bench/README.md)
	$(BIN)/python -m bench.run

doctor: install
	$(BIN)/engines doctor

clean:
	rm -rf $(VENV) var build *.egg-info

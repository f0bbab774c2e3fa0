# Everything runs in .venv, made here from pyproject.toml; nothing else is assumed but python3 and make.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
JOBS   ?= jobs.yaml
OUT    ?= build/jobs
WS     ?= build/workspaces

.PHONY: run setup validate generate check simulate lint test clean

## run: set up, generate and simulate every job of jobs.yaml (the quick start)
run: generate simulate

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[test]'
	touch $(STAMP)

## setup: create .venv and install the project (reuses an existing .venv)
setup: $(STAMP)

## validate: check jobs.yaml against the schema and across fields
validate: setup
	$(BIN)/python -m generator validate --jobs $(JOBS)

## generate: render one NVFlare job folder per job into build/jobs/
generate: setup
	$(BIN)/python -m generator generate --jobs $(JOBS) --out $(OUT)

## check: exit 1 if build/jobs/ differs from what jobs.yaml renders now
check: setup
	$(BIN)/python -m generator generate --check --jobs $(JOBS) --out $(OUT)

## simulate: run every generated job with nvflare simulator and check the results
simulate: setup
	$(BIN)/python -m generator simulate --out $(OUT) --workspace $(WS)

## lint: check the generated configs against the installed nvflare
lint: setup
	$(BIN)/python -m generator lint --jobs $(JOBS) --out $(OUT)

## test: set up and run the whole test suite (unit tests and real simulator runs)
test: setup
	$(BIN)/ruff check generator tests client_scripts
	$(BIN)/python -m pytest

## clean: remove build/ (generated jobs, workspaces, results)
clean:
	rm -rf build

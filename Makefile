# Everything runs in .venv, made here from pyproject.toml; nothing else is assumed but python3 and make.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
JOBS   ?= jobs.yaml
OUT    ?= build/jobs
WS     ?= build/workspaces
JOB    ?=
PORT   ?=
VIEW_ARGS = $(if $(JOB),--job $(JOB)) $(if $(PORT),--port $(PORT))

.PHONY: run setup validate generate check simulate lint test clean mlflow-ui tensorboard wandb-view

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

## mlflow-ui: MLflow UI on a simulated job's SQLite store at http://127.0.0.1:5000 (JOB=name, PORT=n)
mlflow-ui: setup
	$(BIN)/python -m generator view mlflow $(VIEW_ARGS)

## tensorboard: TensorBoard on a simulated job's event files at http://127.0.0.1:6006 (JOB=name, PORT=n)
tensorboard: setup
	$(BIN)/python -m generator view tensorboard $(VIEW_ARGS)

## wandb-view: W&B's terminal viewer (wandb leet) on a simulated job's offline runs (JOB=name)
wandb-view: setup
	$(BIN)/python -m generator view wandb $(VIEW_ARGS)

## lint: check the generated configs against the installed nvflare
lint: setup
	$(BIN)/python -m generator lint --jobs $(JOBS) --out $(OUT)

## test: set up and run the whole test suite (unit tests and real simulator runs)
test: setup
	$(BIN)/ruff check generator tests client_scripts templates
	$(BIN)/python -m pytest

## clean: remove build/ (generated jobs, workspaces, results)
clean:
	rm -rf build

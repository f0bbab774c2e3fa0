# Everything runs in .venv, made here from pyproject.toml; nothing else is assumed but python3 and make.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
JOBS   ?= jobs.yaml
SET    ?=
# JOBS may name several files (later ones merge over earlier ones); SET holds PATH=VALUE overrides.
# Each word single-quoted for the shell: a trial's SET='defaults.num_rounds=3;echo INJECTED' ran echo.
FILES_ARGS = $(foreach f,$(JOBS),--jobs '$(f)')
SET_ARGS   = $(foreach s,$(SET),--set '$(s)')
JOB_ARGS   = $(foreach j,$(JOB),--job '$(j)')
OUT    ?= build/jobs
WS     ?= build/workspaces
JOB    ?=
PORT   ?=
PARALLEL ?=
KIT    ?=
USER_NAME ?=
# poc's workspace (the POC system, HOME of its commands); default build/poc-workspace. NVFlare's POC
# system needs a path without spaces: in a clone whose path has one, give e.g. POC_WS=/tmp/jobgen-poc-$$(id -u).
POC_WS ?=
# RESULTS=file (simulate, poc, submit: --results; mlflow-ui, tensorboard, wandb-view read it too), DOWNLOADS=folder (poc, submit: --downloads),
# REPORTS=folder (simulate: --reports, the plots), SHOW=job names (validate --show)
DOWNLOADS ?=
# RELAY=1: poc --relay (job messages through the POC server, as NVFlare's default comm_config); 0, no, false: not
RELAY ?=
VIEW_ARGS = $(if $(JOB),--job '$(JOB)') $(if $(PORT),--port '$(PORT)') $(if $(RESULTS),--results '$(RESULTS)')

# NVFlare 2.7 gets its own environment (the equivalence harness checks the 2.7 templates against
# NVFlare 2.7 itself). The project pins nvflare>=2.9, so the generator's own dependencies are
# installed by name here and the generator is imported from the work tree (PYTHONPATH).
VENV27      := .venv-nvflare27
STAMP27     := $(VENV27)/.installed
NVFLARE27   := 2.7.3
DEPS27      := "nvflare==$(NVFLARE27)" "mlflow>=3.0,<4" "numpy>=1.24,<3" "pyyaml>=6.0,<7" \
               "jinja2>=3.1,<4" "jsonschema>=4.18,<5" \
               "jsonschema-rs>=0.61,<1" "orjson>=3.10,<4" "pytest>=8" "pytest-xdist>=3.5" \
               "torch==2.13.0"

.PHONY: help run setup setup27 validate generate check simulate poc submit sweep lint test test-fast test29 test27 bench clean mlflow-ui tensorboard wandb-view

## run: set up, generate and simulate every job of jobs.yaml (the quick start)
run: generate simulate

# PYTHONWARNINGS: setuptools' BuildBackendWarning "Editable installation" (a package folder at the
# project root may shadow imports) is what this layout is meant to do; it cluttered the first run.
$(STAMP): pyproject.toml
	test -x "$(BIN)/python" || $(PYTHON) -m venv $(VENV)
	"$(BIN)/python" -m pip install --quiet --upgrade pip
	PYTHONWARNINGS="ignore:Editable installation" "$(BIN)/python" -m pip install --quiet -e '.[test,pt]'
	touch $(STAMP)

## setup: create .venv and install the project (reuses an existing .venv)
setup: $(STAMP)

$(STAMP27): Makefile
	test -x $(VENV27)/bin/python || $(PYTHON) -m venv $(VENV27)
	$(VENV27)/bin/python -m pip install --quiet --upgrade pip
	$(VENV27)/bin/python -m pip install --quiet $(DEPS27)
	touch $(STAMP27)

## setup27: create .venv-nvflare27 with NVFlare 2.7 and the generator's dependencies
setup27: $(STAMP27)

## validate: check jobs.yaml (JOBS="a.yaml b.yaml", SET="PATH=VALUE ...") against the schema and across fields (SHOW="name ...": print those jobs' effective settings)
validate: setup
	"$(BIN)/python" -m generator validate $(FILES_ARGS) $(SET_ARGS) $(foreach j,$(SHOW),--show '$(j)')

## generate: render one NVFlare job folder per job of jobs.yaml (JOBS=, SET=; JOB=name ... for only those) into build/jobs/ (OUT=folder)
generate: setup
	"$(BIN)/python" -m generator generate $(FILES_ARGS) --out "$(OUT)" $(SET_ARGS) $(JOB_ARGS)

## check: exit 1 if build/jobs/ (OUT=) differs from what jobs.yaml (JOBS=, SET=; JOB=name ...) renders now
check: setup
	"$(BIN)/python" -m generator generate --check $(FILES_ARGS) --out "$(OUT)" $(SET_ARGS) $(JOB_ARGS)

# simulate, poc and submit run the generated folders as they are; this says (a warning, never a
# failure) when they are not what the jobs files generate now (`generate --check` exit 1), or when
# the jobs files do not generate at all (exit 2): `make check` names the differences or the problem.
# The make variables in use, for the commands the warning names (a trial ran plain `make check` on
# jobs.yaml after a warning about JOBS=myjobs.yaml OUT=build/myjobs).
GEN_VARS = $(strip $(if $(filter-out jobs.yaml,$(JOBS)),JOBS='$(JOBS)') $(if $(filter-out build/jobs,$(OUT)),OUT='$(OUT)') $(if $(SET),SET='$(SET)'))
# A folder holding jobs made from other files or SET: the check's own last line says which, and
# each one's check (a trial's `make simulate OUT=build/mine` was told to generate jobs.yaml into it).
STALE_NOTE = @why=$$("$(BIN)/python" -m generator generate --check $(FILES_ARGS) --out "$(OUT)" $(SET_ARGS) 2>&1 >/dev/null); \
	case $$? in \
	0) ;; \
	1) case "$$why" in \
	   *"generated from other files"*) echo "warning: running the folders in $(OUT) as they are: $$(printf '%s\n' "$$why" | tail -n 1)" >&2 ;; \
	   *) echo "warning: $(OUT) is not what $(JOBS) generates now (see make check$(if $(GEN_VARS), $(GEN_VARS))): running the folders as they are; make generate$(if $(GEN_VARS), $(GEN_VARS)) first to run what $(JOBS) says$(if $(filter jobs.yaml,$(JOBS)), (if $(OUT) was generated from other files or SET, give the same JOBS= and SET=: generate removes the jobs they do not name))" >&2 ;; \
	   esac ;; \
	*) echo "warning: $(JOBS) does not generate (make check$(if $(GEN_VARS), $(GEN_VARS)) says where): running the folders in $(OUT) as they are" >&2 ;; \
	esac

## simulate: run every generated job of build/jobs (OUT=; or JOB=name ...) with nvflare simulator and check the results (PARALLEL=n jobs at once, WS=workspaces, RESULTS=file, REPORTS=folder)
simulate: setup
	$(STALE_NOTE)
	"$(BIN)/python" -m generator simulate --out "$(OUT)" --workspace "$(WS)" $(JOB_ARGS) $(if $(PARALLEL),--parallel $(PARALLEL)) $(if $(RESULTS),--results "$(RESULTS)") $(if $(REPORTS),--reports "$(REPORTS)")

## poc: run every generated job on a POC system (server and clients on 127.0.0.1) started for them, then stop it (PARALLEL=n jobs at once, POC_WS=its workspace, RELAY=1 for --relay, DOWNLOADS=folder, RESULTS=file)
poc: setup
	$(STALE_NOTE)
	"$(BIN)/python" -m generator poc --out "$(OUT)" $(if $(POC_WS),--workspace "$(POC_WS)") $(JOB_ARGS) $(if $(PARALLEL),--parallel $(PARALLEL)) $(if $(filter-out 0 no false,$(RELAY)),--relay) $(if $(DOWNLOADS),--downloads "$(DOWNLOADS)") $(if $(RESULTS),--results "$(RESULTS)")

## submit: run every generated job on a running NVFlare system through an admin startup kit (KIT=dir, USER_NAME=admin, DOWNLOADS=folder, RESULTS=file)
submit: setup
	@test -n "$(KIT)" || { echo "make submit needs KIT=<an admin's startup kit folder>" >&2; exit 2; }
	$(STALE_NOTE)
	"$(BIN)/python" -m generator submit --out "$(OUT)" --startup-kit "$(KIT)" $(if $(USER_NAME),--username "$(USER_NAME)") $(JOB_ARGS) $(if $(PARALLEL),--parallel $(PARALLEL)) $(if $(DOWNLOADS),--downloads "$(DOWNLOADS)") $(if $(RESULTS),--results "$(RESULTS)")

# The example sweep gets a folder of its own, so it never touches build/jobs or the main results.
# Its scripts are looked up beside the jobs file, so the file and client_scripts/ are copied there.
SWEEP := build/sweep

## sweep: generate examples/sweep.yaml into build/sweep/jobs and simulate it (its own workspaces, results, reports)
sweep: setup
	rm -rf $(SWEEP)/src && mkdir -p $(SWEEP)/src
	cp examples/sweep.yaml $(SWEEP)/src/sweep.yaml
	cp -R client_scripts $(SWEEP)/src/client_scripts
	"$(BIN)/python" -m generator generate --jobs $(SWEEP)/src/sweep.yaml --out $(SWEEP)/jobs
	"$(BIN)/python" -m generator simulate --out $(SWEEP)/jobs --workspace $(SWEEP)/workspaces \
		--results $(SWEEP)/results.json --reports $(SWEEP)/reports $(if $(PARALLEL),--parallel $(PARALLEL))

## mlflow-ui: MLflow UI on every simulated MLflow job (build/mlflow.db), or JOB=name's own store, at http://127.0.0.1:5000 (PORT=n)
mlflow-ui: setup
	"$(BIN)/python" -m generator view mlflow $(VIEW_ARGS)

## tensorboard: TensorBoard on every simulated TensorBoard job, or JOB=name's, at http://127.0.0.1:6006 (PORT=n)
tensorboard: setup
	"$(BIN)/python" -m generator view tensorboard $(VIEW_ARGS)

## wandb-view: W&B's terminal viewer (wandb leet) on a simulated job's offline runs (JOB=name)
wandb-view: setup
	"$(BIN)/python" -m generator view wandb $(VIEW_ARGS)

## lint: check the generated configs (OUT=, from JOBS= and SET=; JOB=name ... for only those jobs) against the installed nvflare
lint: setup
	"$(BIN)/python" -m generator lint $(FILES_ARGS) --out "$(OUT)" $(SET_ARGS) $(JOB_ARGS)

RUFF_PATHS := generator tests client_scripts templates bench

## test: set up and run the whole test suite (ruff, every test with full hypothesis counts, simulator runs) on NVFlare 2.9 and 2.7
# The two environments are made at the same time (pip's downloads and installs wait on the network
# and the disk more than on the CPU); `make setup` and `make setup27` still make each alone.
test:
	$(MAKE) --no-print-directory -j2 setup setup27
	"$(BIN)/ruff" check $(RUFF_PATHS)
	"$(BIN)/ruff" format --check $(RUFF_PATHS)
	@mkdir -p build && rm -f "$(TEST27_LOG)"
	@echo "make test: the NVFlare 2.9 suite prints here as it runs; the NVFlare 2.7 harness runs beside it into $(TEST27_LOG), printed when both end"
	@$(MAKE) --no-print-directory -j2 test29 test27 TEST27_OUT="$(TEST27_LOG)"; code=$$?; \
	echo "==== make test27 (NVFlare 2.7 harness), from $(TEST27_LOG):"; cat "$(TEST27_LOG)" 2>/dev/null || echo "(none: it did not start)"; exit $$code

# test29 and test27 run at the same time: the simulations mostly wait (the 2.9 suite on its own used
# 0.7 s of CPU per second, of the 2 cores' 2), and the 2.7 harness ends well before the 2.9 suite.
# The 2.9 suite's output is shown as it runs; the 2.7 harness's goes to TEST27_LOG (the two would
# interleave line by line) and is printed at the end; make test fails if either fails.
TEST27_LOG := build/test27.log
## test29: every test on NVFlare 2.9 with full hypothesis counts on 2 pytest-xdist workers (make test without ruff and 2.7)
test29: setup
	"$(BIN)/python" -m pytest -n 2 --dist loadscope --durations=15

## test-fast: ruff + every test that is neither `simulator` nor `slow`, hypothesis capped (the edit-test loop; NVFlare 2.9 only)
test-fast: setup
	"$(BIN)/ruff" check $(RUFF_PATHS)
	"$(BIN)/ruff" format --check $(RUFF_PATHS)
	"$(BIN)/python" -m pytest -m "not simulator and not slow" --hypothesis-profile=fast

## test27: the equivalence harness against NVFlare 2.7, in .venv-nvflare27 (2 pytest-xdist workers, one simulated pair each at a time)
test27: setup27
	PYTHONPATH="$(CURDIR)" $(VENV27)/bin/python -m pytest tests/test_equivalence.py -n 2 --dist loadscope --durations=15 \
	  $(if $(TEST27_OUT),> "$(TEST27_OUT)" 2>&1)

## bench: generate 1..10,000 jobs vs FedJob export vs cp -r, the example's runs vs FedJob, --parallel 1 vs the default (not a test)
bench: setup
	"$(BIN)/python" bench/bench.py

## help: list the targets and what each does (these ## lines)
help:
	@sed -n 's/^## \([a-z0-9-]*\): /\1\t/p' $(firstword $(MAKEFILE_LIST)) | expand -t 14

## clean: remove build/ (generated jobs, workspaces, results)
clean:
	rm -rf build

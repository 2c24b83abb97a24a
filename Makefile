# Quick start: `make demo` (main job on the bundled sample site, embedded default) and `make test`.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
export DAGSTER_HOME ?= $(CURDIR)/.dagster
SAMPLE_SITE ?= sample

.PHONY: install demo test lint ui clean

# Re-install when the project definition changes; the stamp keeps repeated runs fast.
$(VENV)/.installed: pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[test]'
	touch $@

install: $(VENV)/.installed

## Run the main job (all six assets, in order) for the bundled sample site, then summarise.
demo: install
	$(BIN)/pipeline sites add $(SAMPLE_SITE) --name "Home Barista Guide" --keywords data/sample/keywords.csv
	$(BIN)/dagster job execute -m pipeline.definitions -j content_pipeline \
		--tags '{"dagster/partition": "$(SAMPLE_SITE)"}'
	@echo
	@echo "== What the pipeline produced =="
	$(BIN)/pipeline status --site $(SAMPLE_SITE)

## Lint and run the test suite (pytest's "no tests collected" exit code 5 fails the target).
test: install
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/pytest

lint: install
	$(BIN)/ruff check . && $(BIN)/ruff format --check .

## Dagster UI (webserver + daemon) on http://127.0.0.1:3000 with the persistent instance in .dagster/.
ui: install
	$(BIN)/python -c "from pipeline.cli import ensure_dagster_home; ensure_dagster_home()"
	$(BIN)/dagster dev -w workspace.yaml -h 127.0.0.1 -p 3000

clean:
	rm -rf data/local .dagster

# The targets CI runs are exactly these: .ci/run calls `make test`.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
# Two stamps on one venv: `make run` installs the bot's own dependencies only (about
# 90 MB); the test tools (Synapse, mypy, ruff, ...) come with the first `make test`.
RUN_STAMP := $(VENV)/.run-stamp
STAMP := $(VENV)/.installed-stamp

.PHONY: run test unit lint bench deps venv venv-run clean

$(RUN_STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e .
	touch $(RUN_STAMP)

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[test]'
	touch $(STAMP) $(RUN_STAMP)

venv-run: $(RUN_STAMP)
venv: $(STAMP)

## run: the bot (the console room when config.yaml has no matrix: section)
run: venv-run
	$(BIN)/coopbot run $(if $(CONFIG),--config $(CONFIG))

## deps: the system packages the real-component tests need, only those missing (never replaces a Docker)
deps:
	scripts/install-system-deps

## test: everything CI checks: lint, types, unit and integration tests
test: deps venv js lint
	$(BIN)/pytest

# The Element-like test client (matrix-js-sdk, tests/js): installed from its lock file.
JS_STAMP := tests/js/node_modules/.package-lock.json
js: $(JS_STAMP)
$(JS_STAMP): tests/js/package.json tests/js/package-lock.json
	cd tests/js && npm ci --no-audit --no-fund

## unit: the fast tests only (no homeserver, no swarm)
unit: venv
	$(BIN)/pytest tests/unit

## lint: ruff, mypy over bot/commands and over tests and bench, and the import contracts of pyproject.toml
lint: venv
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy
	$(BIN)/mypy tests bench
	$(BIN)/lint-imports

## bench: the figures named in the issues, each beside its baseline
bench: deps venv
	$(BIN)/python -m bench.matrix_latency
	$(BIN)/python -m bench.backlog
	$(BIN)/python -m bench.idle_rss
	$(BIN)/python -m bench.deploy
	$(BIN)/python -m bench.apps_inventory
	$(BIN)/python -m bench.upgrade_check
	$(BIN)/python -m bench.backup
	$(BIN)/python -m bench.multinode_backup
	$(BIN)/python -m bench.backup_many
	$(BIN)/python -m bench.compose_render
	$(BIN)/python -m bench.corpus_scale
	$(BIN)/python -m bench.watch_latency
	$(BIN)/python -m bench.watch_cpu
	$(BIN)/python -m bench.flood
	$(BIN)/python -m bench.logs_tail

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache .import_linter_cache tests/js/node_modules

# payorch: `make run` serves on the embedded default, `make test` runs every test.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
BUF    := node_modules/.bin/buf
PROTOS := $(shell find proto -name '*.proto' | sort)
GEN_DIR := src
STAMP  := $(VENV)/.installed

.PHONY: install proto proto-check run test test-fast lint breaking bench clean

install: $(STAMP) $(BUF)

$(STAMP): pyproject.toml
	test -d $(VENV) || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[dev]'
	touch $@

$(BUF): package.json
	npm install --no-audit --no-fund --silent
	touch $@

# Python messages, .pyi type stubs and gRPC stubs, generated from proto/.
proto: $(STAMP)
	$(BIN)/python -m grpc_tools.protoc -Iproto \
	  --python_out=$(GEN_DIR) --pyi_out=$(GEN_DIR) --grpc_python_out=$(GEN_DIR) $(PROTOS)
	for d in $$(find $(GEN_DIR)/payments -type d); do touch $$d/__init__.py; done

# Fails when the committed stubs differ from what proto/ generates.
proto-check: proto
	@git diff --exit-code --stat -- $(GEN_DIR)/payments \
	  && test -z "$$(git ls-files --others --exclude-standard -- $(GEN_DIR)/payments)" \
	  || { echo "generated stubs are stale: run 'make proto' and commit src/payments"; exit 1; }

# Serves on the embedded default (SQLite file payorch.db, simulated processor);
# a demo key for m_demo is created in .payorch/demo-key, which the CLI picks up.
run: install
	$(BIN)/payorch serve --demo-key-file .payorch/demo-key

# One pytest worker per CPU (pytest-xdist): each has its own PostgreSQL database and
# temporary directories. TEST_WORKERS=0 runs everything in one process.
TEST_WORKERS ?= auto
test: install
	$(BIN)/pytest -q -n $(TEST_WORKERS)

lint: install
	$(BUF) lint
	$(BUF) format --diff --exit-code
	$(BIN)/ruff check src tests bench
	$(BIN)/ruff format --check src tests bench
	$(BIN)/mypy

breaking: install
	@bash scripts/breaking.sh $(BUF)

bench: install
	$(BIN)/python bench/run.py

clean:
	rm -rf $(VENV) node_modules .pytest_cache .mypy_cache .ruff_cache

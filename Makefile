# The README's two commands are `make demo` (set up, then run a real job) and `make test`.
# Every target creates the virtual environment first when it is missing or out of date.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
SHARED := ../shared/data

.PHONY: setup demo test lint bench clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	PYTHONWARNINGS=ignore $(BIN)/pip install --quiet -e ".[dev]"
	touch $(STAMP)

setup: $(STAMP)

demo: $(STAMP)
	$(BIN)/selfinstruct filter $(SHARED)/t0_prompts_55k.jsonl.gz \
		--reference seed_tasks/seed_tasks.jsonl --output-dir outputs/filter-t0

test: $(STAMP)
	$(BIN)/python -m pytest -q

lint: $(STAMP)
	$(BIN)/ruff check . && $(BIN)/ruff format --check .

bench: $(STAMP)
	$(BIN)/python bench/filter_bench.py

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache .hypothesis

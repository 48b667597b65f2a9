# Two commands do everything on a fresh machine (Python >= 3.10 and make):
#   make run    the main job, on built-in data (no download)
#   make test   the whole test suite, exactly what CI runs (.ci/run)
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin

.PHONY: run test bench clean

$(BIN)/sw: pyproject.toml constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -c constraints.txt -e '.[dev]'
	touch $@

run: $(BIN)/sw
	$(BIN)/sw run specs/diffusion.sw

test: $(BIN)/sw
	$(BIN)/python -m pytest

bench: $(BIN)/sw
	$(BIN)/python bench/check_startup.py
	$(BIN)/python bench/parse_throughput.py
	$(BIN)/python bench/throughput.py
	$(BIN)/python bench/cache.py
	$(BIN)/python bench/quality.py

clean:
	rm -rf $(VENV) build dist .pytest_cache .hypothesis runs

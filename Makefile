# The two commands of the README:  `make demo` (set up + main job)  and  `make test`.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin

.PHONY: setup demo test lint clean

# torch is installed first and pinned: the 2.13.0 CPU build; an unpinned torch pulls a multi-GB CUDA build.
$(BIN)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet torch==2.13.0
	$(BIN)/pip install --quiet -e '.[test]'
	touch $@

setup: $(BIN)/.installed

demo: setup
	$(BIN)/latentdiff demo --out out/demo.png

test: setup
	$(BIN)/ruff check latentdiff tests benchmarks
	$(BIN)/ruff format --check latentdiff tests benchmarks
	$(BIN)/python -m pytest -q

clean:
	rm -rf $(VENV) out .pytest_cache

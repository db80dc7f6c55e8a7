# Entry points: `make demo`, `make test`, `make lint` and `make docs`. Each creates .venv on first use.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: install demo test lint docs clean

$(STAMP): pyproject.toml constraints.txt
	$(PYTHON) -m venv $(VENV)
	# torch and torchvision first, pinned, so that nothing pulls another build
	$(BIN)/pip install --quiet -c constraints.txt torch torchvision
	$(BIN)/pip install --quiet -c constraints.txt -e '.[test,lint,docs,timm,hf]'
	touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	$(BIN)/jittercam explain examples/images --method gradcam,jittercam --out demo-output
	@echo "overlays and maps written to demo-output/"

# two processes (pytest-xdist): 5 minutes instead of 8.5 on the 2-core CI machine
test: $(STAMP)
	$(BIN)/python -m pytest -q -n 2

# ruff and mypy as configured in pyproject.toml; the import contracts when .importlinter declares them
lint: $(STAMP)
	$(BIN)/ruff check src tests benchmarks
	$(BIN)/mypy src
	@if [ -f .importlinter ]; then echo "$(BIN)/lint-imports"; PYTHONPATH=src $(BIN)/lint-imports; \
	else echo "no .importlinter: import contracts not checked"; fi

# the API reference in build/site/ (open build/site/index.html); strict: a broken reference fails
docs: $(STAMP)
	NO_MKDOCS_2_WARNING=1 $(BIN)/mkdocs build --strict --quiet

clean:
	rm -rf $(VENV) demo-output build .pytest_cache .mypy_cache .ruff_cache

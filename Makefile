# The entry points of the README: `make demo` (first run), `make test` (CI), `make reproduce`
# (main job), `make lab`; `make install` alone makes .venv/. ARGS passes options to the
# fsstools command of demo and reproduce: make reproduce ARGS="--only 02 03".
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: install demo reproduce test lab lint clean

install: $(STAMP)

$(STAMP): requirements.txt pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --upgrade pip
	$(BIN)/python -m pip install -r requirements.txt
	$(BIN)/python -m pip install --no-deps -e .
	$(BIN)/python -m ipykernel install --prefix $(VENV) --name python3 --display-name "fsstools (.venv)"
	touch $(STAMP)

# RePRI against three baselines on the quick profile, in minutes (fsstools demo --help)
demo: install
	$(BIN)/fsstools demo $(ARGS)

reproduce: install
	$(BIN)/fsstools reproduce $(ARGS)

# unit tests, papermill tests, nbval over every notebook, then the browser test of the
# explorer (marked `browser`: skipped without Chromium; .ci/run installs it)
test: install
	$(BIN)/python -m pytest -q --durations=15 tests notebooks --nbval-lax

# JupyterLab on the notebooks, with this project's kernel ("fsstools (.venv)")
lab: install
	$(BIN)/jupyter lab notebooks

lint: install
	$(BIN)/ruff check fsstools tests bench

clean:
	rm -rf $(VENV) outputs

# The two entry points of the README: `make reproduce` (main job) and `make test`.
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: install reproduce test lint clean

install: $(STAMP)

$(STAMP): requirements.txt pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --upgrade pip
	$(BIN)/python -m pip install -r requirements.txt
	$(BIN)/python -m pip install --no-deps -e .
	$(BIN)/python -m ipykernel install --prefix $(VENV) --name python3 --display-name "fsstools (.venv)"
	touch $(STAMP)

reproduce: install
	$(BIN)/fsstools reproduce

test: install
	$(BIN)/python -m pytest -q --durations=15 tests notebooks --nbval-lax

lint: install
	$(BIN)/ruff check fsstools tests bench

clean:
	rm -rf $(VENV) outputs

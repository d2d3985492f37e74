# make repro: set up (once) and run the whole DVC pipeline on the default params.
# make test:  set up (once) and run the test suite.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
TORCH  ?= torch==2.13.0

.PHONY: setup repro test bench clean
setup: $(VENV)/.installed

# Torch first, on its own: the CPU build of 2.13.0 here. Installing it before the project means
# no dependency can drag in a multi-GB CUDA build (torch>=2.2 is already satisfied).
$(VENV)/.installed: pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -c "import torch" 2>/dev/null || $(BIN)/pip install -q "$(TORCH)"
	$(BIN)/pip install -q -e ".[test]"
	test -d .dvc || $(BIN)/dvc init -q
	touch $@

repro: setup
	PATH="$(CURDIR)/$(BIN):$$PATH" $(BIN)/dvc repro

test: setup
	PATH="$(CURDIR)/$(BIN):$$PATH" HF_HUB_OFFLINE=1 $(BIN)/python -m pytest

clean:
	rm -rf $(VENV) *.egg-info

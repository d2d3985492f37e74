# make repro:     set up (once) and run the whole DVC pipeline on the default params.
# make test:      set up (once) and run the whole test suite (what CI runs).
# make test-fast: the suite without the tests marked slow (the edit-test loop).
# make check:     does this workspace reproduce the committed dvc.lock? (t2i check; after make repro)
# Another torch build: make setup TORCH_INDEX=https://download.pytorch.org/whl/cpu (or .../cu126).
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
TORCH  ?= torch==2.13.0
TORCH_INDEX ?=
# Test processes (pytest-xdist): auto = one per core; each test file runs whole on one of them,
# so a file's module fixtures (a tiny reproduced project) are built once. TEST_JOBS=0: one process.
TEST_JOBS ?= auto
PYTEST := $(BIN)/python -m pytest -n $(TEST_JOBS) --dist loadfile

.PHONY: setup repro check test test-fast clean browser
setup: $(VENV)/.installed

# Torch first, on its own: the CPU build of 2.13.0 here. Installing it before the project means
# no dependency can drag in a multi-GB CUDA build (torch>=2.2 is already satisfied).
$(VENV)/.installed: pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -c "import torch" 2>/dev/null || $(BIN)/pip install -q "$(TORCH)" $(if $(TORCH_INDEX),--index-url $(TORCH_INDEX))
	$(BIN)/pip install -q -e ".[test]"
	test -d .dvc || $(BIN)/dvc init -q
	touch $@

repro: setup
	PATH="$(CURDIR)/$(BIN):$$PATH" $(BIN)/dvc repro

check: setup
	PATH="$(CURDIR)/$(BIN):$$PATH" HF_HUB_OFFLINE=1 $(BIN)/t2i check

test: setup browser
	PATH="$(CURDIR)/$(BIN):$$PATH" HF_HUB_OFFLINE=1 $(PYTEST)

test-fast: setup
	PATH="$(CURDIR)/$(BIN):$$PATH" HF_HUB_OFFLINE=1 $(PYTEST) -m "not slow"

# The `t2i serve` page is tested in Debian's headless chromium. Installed when missing and
# apt-get is allowed (root); elsewhere the browser test is skipped, except under CI=true.
browser:
	@command -v chromium >/dev/null && command -v chromedriver >/dev/null || \
	  { apt-get update -qq && apt-get install -y -qq chromium chromium-driver >/dev/null; } || \
	  echo "make: chromium and chromium-driver not installed: the browser test will be skipped"

clean:
	rm -rf $(VENV) *.egg-info

# The two README commands: `make demo` (the default experiment) and `make test` (the suite).
# Each creates or reuses .venv and installs what it needs, with a torch/torchvision pair that works.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
# torch and torchvision must be installed together, before anything that depends on torch.
TORCH_PAIR ?= torch==2.14.1 torchvision==0.29.1
STAMP := $(VENV)/.installed

.PHONY: demo test lint bench clean

$(STAMP): setup.cfg pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -c "import torch, torchvision" 2>/dev/null || $(BIN)/python -m pip install --quiet $(TORCH_PAIR)
	$(BIN)/python -m pip install --quiet -e ".[dev]"
	touch $(STAMP)

demo: $(STAMP)
	$(BIN)/cfair run $(ARGS)

test: $(STAMP)
	$(BIN)/python -m ruff check constrained_fairness tests benchmarks examples
	$(BIN)/python -m pytest

lint: $(STAMP)
	$(BIN)/python -m ruff check constrained_fairness tests benchmarks examples

bench: $(STAMP)
	$(BIN)/python -c "import cvxpylayers" 2>/dev/null || $(BIN)/python -m pip install --quiet -e ".[bench]"
	for script in benchmarks/*.py; do $(BIN)/python $$script || exit 1; done

clean:
	rm -rf $(VENV) runs

# The two commands a new user needs:  make train  |  make test
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.rlframe-installed
# Overrides for `make train`, e.g.  make train ARGS="trainer.max_steps=5 run.output_dir=/tmp/r"
ARGS   ?=
# Test tiers: `make test` runs everything but the `gpu` tests (CUDA only); `make test-fast` only the tier without Ray.
# Both run on JOBS pytest-xdist workers (JOBS=0: one process); the longest tests start first (tests/conftest.py).
PYTEST ?= $(BIN)/python -m pytest
JOBS   ?= 2
XDIST  := -n $(JOBS) --dist loadgroup

.PHONY: install train sft test test-fast clean
install: $(STAMP)

$(STAMP): pyproject.toml constraints-cpu.txt launch/install.sh
	bash launch/install.sh $(VENV)
	touch $(STAMP)

train: install
	$(BIN)/rlframe train $(ARGS)

test: install
	$(PYTEST) tests -q -m "not gpu" $(XDIST) --durations=25 $(ARGS)

test-fast: install
	$(PYTEST) tests -q -m "not integration and not gpu" $(XDIST) $(ARGS)

clean:
	rm -rf outputs .cache .pytest_cache

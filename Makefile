# nanoR1. Two commands do all the set-up on a fresh machine:
#   make test    create .venv (once), install the dev requirements, run the fast tests
#   make train   create .venv (once), install the runtime requirements, run the reflection demo
#                (python train.py --config data/tiny_recheck/demo.toml); make train-carry: the carry demo
# Bring your own environment (a GPU box with its own torch, no network): make test PYTHON=python3
VENV := .venv
PYTHON ?= $(VENV)/bin/python
PYTEST_ARGS ?=

.PHONY: test test-slow train train-carry sample loc bench clean

$(VENV)/.runtime: requirements.txt
	python3 -m venv $(VENV)
	$(VENV)/bin/pip install -q -r requirements.txt
	touch $@

$(VENV)/.dev: requirements-dev.txt requirements.txt $(VENV)/.runtime
	$(VENV)/bin/pip install -q -r requirements-dev.txt
	touch $@

# Set-up runs only when PYTHON is the project venv; a user's own interpreter is used as it is.
ifeq ($(PYTHON),$(VENV)/bin/python)
DEV_DEPS := $(VENV)/.dev
RUN_DEPS := $(VENV)/.runtime
endif

test: $(DEV_DEPS)
	$(PYTHON) -m pytest -q -m "not slow" $(PYTEST_ARGS) tests

test-slow: $(DEV_DEPS)
	$(PYTHON) -m pytest -q -m slow $(PYTEST_ARGS) tests

# The reflection demo (issue 23): accuracy, length and self-checking grow together (README, "The demo").
train: $(RUN_DEPS)
	$(PYTHON) train.py --config data/tiny_recheck/demo.toml $(ARGS)

# The carry demo (issue 12): train.py's defaults, data/tiny learns to carry the one.
train-carry: $(RUN_DEPS)
	$(PYTHON) train.py $(ARGS)

sample: $(RUN_DEPS)
	$(PYTHON) sample.py $(ARGS)

# Lines of the core (code the reader is meant to read in an afternoon), tests and benchmarks excluded: the
# README's table is rewritten from the files (scripts/loc.py), never typed by hand.
loc:
	@python3 scripts/loc.py --update README.md
	@python3 scripts/loc.py

clean:
	rm -rf $(VENV) .pytest_cache

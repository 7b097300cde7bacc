# make demo : create .venv, install lt_bench, run the digits-LT demo (stage 1, stage 2, records)
# make test : the whole test suite (what CI runs); make test-fast skips the slow end-to-end runs
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
export OMP_WAIT_POLICY ?= PASSIVE

.PHONY: demo test test-fast install

install: $(VENV)/.installed

$(VENV)/.installed: setup.py
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --disable-pip-version-check -e ".[dev]"
	touch $@

demo: install
	$(PY) run.py task=digits_lt

test: install
	$(PY) -m pytest -q

test-fast: install
	$(PY) -m pytest -q -m "not slow"

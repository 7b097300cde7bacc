# make demo : create .venv, install lt_bench, run the digits-LT demo (stage 1, stage 2, records)
# make test : the whole test suite (what CI runs); make test-fast skips the slow end-to-end runs
# make det  : the detection extra (mmdet, mmcv, lvis); its tests skip until it is installed
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
export OMP_WAIT_POLICY ?= PASSIVE

.PHONY: demo test test-fast install det

install: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --disable-pip-version-check -e ".[dev]"
	touch $@

# the detection extra (mmcv built once from source, then cached: see scripts/install_detection.sh)
det: $(VENV)/.det-installed

$(VENV)/.det-installed: $(VENV)/.installed scripts/install_detection.sh pyproject.toml
	PY=$(PY) scripts/install_detection.sh
	touch $@

demo: install
	$(PY) run.py task=digits_lt

test: install
	$(PY) -m pytest -q

test-fast: install
	$(PY) -m pytest -q -m "not slow"

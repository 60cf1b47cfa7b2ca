# The two commands of the README.  Each creates .venv when missing and installs
# the project into it (editable, with test extras), then does its job.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed-stamp
WORKDIR ?= workdirs/demo
CONFIG ?= configs/default.py
PYTEST_ARGS ?=

.PHONY: demo test install clean

$(STAMP): setup.py
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[test]'
	touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	$(PY) -m advinv_jax.main --config=$(CONFIG) --workdir=$(WORKDIR)

test: $(STAMP)
	$(PY) -m pytest -q -n 3 --dist loadfile --durations=15 tests $(PYTEST_ARGS)

clean:
	rm -rf $(VENV) workdirs

# One entry point for everything. `make test` works on a fresh machine from a clean clone:
# it creates the venvs, brings the lab up (installs and starts real daemons), and runs every test.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
VENV_218 := .venv-2.18
PY := $(VENV)/bin/python
PIP_QUIET := --quiet --disable-pip-version-check

.PHONY: venv lab lab-down test unit integration sanity lint demo bench docs build reliability clean

venv: $(VENV)/.installed $(VENV_218)/.installed

$(VENV)/.installed: requirements/dev-2.19.txt requirements.txt
	$(PYTHON) -m venv $(VENV)
	$(VENV)/bin/pip install $(PIP_QUIET) -r requirements/dev-2.19.txt 2> >(grep -v "is ignored: it is neither" >&2)
	touch $@

$(VENV_218)/.installed: requirements/dev-2.18.txt
	$(PYTHON) -m venv $(VENV_218)
	$(VENV_218)/bin/pip install $(PIP_QUIET) -r requirements/dev-2.18.txt 2> >(grep -v "is ignored: it is neither" >&2)
	touch $@

lab:
	$(PYTHON) lab/lab.py up

lab-down:
	$(PYTHON) lab/lab.py down

# Unit tests, the integration tests, then sanity (ansible-test starts in the background at once), in one pytest run
# so that the last line is pytest's own summary of all of it.
test: venv lab
	CI=$${CI:-} $(PY) -m pytest tests/unit tests/reliability/test_input_properties.py tests/integration tests/sanity

unit: venv
	$(PY) -m pytest tests/unit

integration: venv lab
	$(PY) -m pytest tests/integration

sanity: venv
	$(PY) -m pytest tests/sanity

lint: venv
	$(PY) tools/lint.py

docs: venv
	$(PY) tools/docs.py

build: venv
	$(PY) tools/build.py

# Plays find the collection through a collections path that points at this checkout.
COLLECTIONS := build/collections
$(COLLECTIONS)/ansible_collections/oneclickvirt/virt:
	mkdir -p $(COLLECTIONS)/ansible_collections/oneclickvirt
	ln -sfn ../../../.. $@

demo: venv lab $(COLLECTIONS)/ansible_collections/oneclickvirt/virt
	ANSIBLE_COLLECTIONS_PATH=$(CURDIR)/$(COLLECTIONS) $(VENV)/bin/ansible-playbook -i localhost, -c local playbooks/demo.yml

# Ours against the peer collections on the lab (benchmarks/README.md); not part of CI.
# `make bench BENCH_ARGS="--scale small"` for a quick run.
bench: venv lab
	$(PY) benchmarks/run.py $(BENCH_ARGS)

# Faults, bad input, secrets and load against the lab (tests/reliability); writes reliability/results/report.md
# and report.json. Not part of CI. `make reliability REL_ARGS="--scale 0.2"` for smaller load scenarios.
reliability: venv lab
	$(PY) reliability/run.py $(REL_ARGS)

clean:
	rm -rf $(VENV) $(VENV_218) tests/output build

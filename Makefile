# kexec.kho: `make demo` runs a handover against the lab VM, `make test` runs every test.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
BIN := $(abspath $(VENV))/bin
BUILD := $(abspath build)
COLL := $(BUILD)/ansible_collections/kexec/kho
export PATH := $(BIN):$(PATH)
export ANSIBLE_COLLECTIONS_PATH := $(BUILD)
export KHO_BUILD := $(BUILD)
export KHO_SHARED ?= $(abspath ../shared)

.PHONY: test demo bench venv layout host sanity lint pytest lab-up lab-down clean

$(BIN)/.stamp: requirements.txt tests/requirements.txt
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --disable-pip-version-check -r tests/requirements.txt
	touch $@

venv: $(BIN)/.stamp

layout: venv
	tests/utils/layout.sh $(COLL)

host:
	$(PYTHON) tests/lab/lab.py setup-host

sanity: layout
	tests/utils/get-pip-standin.sh
	cd $(COLL) && ansible-test sanity --venv --python 3.11 --color no

lint: layout
	cd $(COLL) && ansible-lint --profile production --offline -q

pytest: layout host
	cd $(COLL) && python -m pytest -ra -p no:cacheprovider tests/unit tests/package tests/integration

test: sanity lint pytest

demo: layout host
	tests/utils/demo.sh

bench: layout host
	cd $(COLL) && python bench/run.py $(BENCH_ARGS)
	mkdir -p bench/results && cp -n $(COLL)/bench/results/*.json bench/results/

lab-up: host venv
	$(PYTHON) tests/lab/lab.py up

lab-down:
	$(PYTHON) tests/lab/lab.py down

clean:
	rm -rf $(BUILD) $(VENV)

# kexec.kho: `make demo` runs a handover against the lab VM.  Tests come in three tiers, each one
# command that prints a table of its stages' times (tests/utils/tier.py):
#   make unit      static checks and unit tests: Python only, no root, no apt, no QEMU
#   make test      what CI runs: both ansible-core legs, lint, docs, units, simulated trees, lean lab tier
#   make test-lab  the whole lab matrix (fault matrix, repeats, molecule, fleet, GRUB guest); not in CI
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
BIN := $(abspath $(VENV))/bin
BUILD := $(abspath build)
COLL := $(BUILD)/ansible_collections/kexec/kho
# The lab's tests run beside the other stages in make test: from a layout of their own, which the
# other stages' layout never rewrites under them.
LAB_BUILD := $(abspath build-lab)
LAB_COLL := $(LAB_BUILD)/ansible_collections/kexec/kho
export PATH := $(BIN):$(PATH)
export ANSIBLE_COLLECTIONS_PATH := $(BUILD)
export KHO_BUILD := $(BUILD)

# The newest ansible-core (2.21) needs Python 3.12+, the oldest one supported (2.16, as meta/runtime.yml
# says) runs on controller Python 3.10; these machines have both under ~/.pyenv only.
PY_NEWEST := $(firstword $(wildcard $(HOME)/.pyenv/versions/3.13*/bin/python3.13 $(HOME)/.pyenv/versions/3.12*/bin/python3.12) $(shell command -v python3.13 python3.12 2>/dev/null))
PY_OLDEST := $(firstword $(wildcard $(HOME)/.pyenv/versions/3.10*/bin/python3.10) $(shell command -v python3.10 2>/dev/null))

.PHONY: unit test test-lab demo bench venv layout layout-lab host static sanity lint docs units dtc simulated lab-build lab-lean \
	lab-full newest oldest venv-oldest demo-live lab-up lab-down clean

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
	tests/utils/target-pythons.sh $(COLL)

lint: layout
	cd $(COLL) && ansible-lint --profile production --offline -q

PYTEST = cd $(COLL) && python -m pytest -ra -p no:cacheprovider

static: venv
	flake8 --max-line-length 160 --extend-ignore E402,W503,W504 plugins tests bench

# The FDT cross-check's reference, dtc: installed by the unit tests' prerequisite where this is root on Debian, and
# then required (KHO_REQUIRE_DTC: the cross-check fails without it); elsewhere it says skipped, and why.
CAN_APT := $(shell [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null && echo 1)
dtc:
	$(if $(CAN_APT),command -v dtc >/dev/null || $(PYTHON) tests/lab/lab.py install device-tree-compiler)

units: export KHO_REQUIRE_DTC := $(CAN_APT)
units: layout dtc
	$(PYTEST) -m "not lab" tests/unit tests/package

simulated: layout
	$(PYTEST) -m "not lab" tests/integration

lab-build: host
	$(PYTHON) tests/lab/lab.py build --snapshot

layout-lab: venv
	tests/utils/layout.sh $(LAB_COLL)

# The lab's tests also run the role under the oldest ansible-core this collection supports (KHO_OLDEST_VENV).
LABTEST = cd $(LAB_COLL) && KHO_OLDEST_VENV=$(if $(PY_OLDEST),$(abspath .venv-oldest)) \
	ANSIBLE_COLLECTIONS_PATH=$(LAB_BUILD) python -m pytest -ra -p no:cacheprovider --durations=0

# Each tier's pytest leaves a JUnit report; ran.py fails a tier that passed no test where the lab can run, and
# records it as skipped, with the reason, where it cannot (tests/utils/tier.py shows it so).
# Both lab tiers run two tests at a time (pytest-xdist), tests sharing a guest on one worker, longest first
# (tests/conftest.py): the lean tier is the cold make test's critical path after the kernel build.
LAB_XDIST = -n 2 --dist loadgroup --no-loadscope-reorder

lab-lean: layout-lab host venv-oldest
	$(LABTEST) $(LAB_XDIST) -m "lab and not lab_full" tests/integration --junitxml=$(BUILD)/logs/lab-lean.xml
	$(PYTHON) tests/utils/ran.py $(BUILD)/logs/lab-lean.xml lab-lean

lab-full: layout-lab host venv-oldest
	$(LABTEST) $(LAB_XDIST) -m lab tests/integration --junitxml=$(BUILD)/logs/lab-full.xml
	$(PYTHON) tests/utils/ran.py $(BUILD)/logs/lab-full.xml lab-full

newest:
	tests/utils/leg.sh newest "$(PY_NEWEST)" $(abspath .venv-newest) tests/requirements-newest.txt \
	  $(abspath build-newest)/ansible_collections/kexec/kho

OLDEST_LEG = tests/utils/leg.sh oldest "$(PY_OLDEST)" $(abspath .venv-oldest) tests/requirements-oldest.txt \
	  $(abspath build-oldest)/ansible_collections/kexec/kho

oldest:
	$(OLDEST_LEG)

venv-oldest:
	$(OLDEST_LEG) --venv-only

docs: layout
	tests/utils/docs.sh $(COLL)
	tests/utils/galaxy-importer.sh $(COLL)
	tests/utils/ee.sh $(COLL)

unit:
	$(PYTHON) tests/utils/tier.py unit

test:
	$(PYTHON) tests/utils/tier.py test

test-lab:
	$(PYTHON) tests/utils/tier.py lab

demo: layout host
	tests/utils/demo.sh

# The same on the sid guest: a service's preserved fd store across the handover (live update).
demo-live: layout host
	tests/utils/demo.sh live

bench: layout host
	cd $(COLL) && python bench/lab_bench.py $(BENCH_ARGS)
	mkdir -p bench/results && cp -n $(COLL)/bench/results/*.json bench/results/

lab-up: host venv
	$(PYTHON) tests/lab/lab.py up

lab-down:
	$(PYTHON) tests/lab/lab.py down

clean:
	rm -rf $(BUILD) $(LAB_BUILD) $(VENV) .venv-newest .venv-oldest build-newest build-oldest

# Cut the release galaxy.yml names (docs/releasing.md): antsibull-changelog collects changelogs/fragments into
# changelogs/changelog.yaml and CHANGELOG.rst, then the release tests run.  The commit and the tag are the releaser's.
.PHONY: release-notes
release-notes: venv
	@v=$$(sed -n 's/^version: *//p' galaxy.yml); \
	if grep -q "^  $$v:$$" changelogs/changelog.yaml; then \
	  echo "release-notes: $$v is released already: raise galaxy.yml's version first (docs/releasing.md)"; exit 1; fi; \
	env -u ANSIBLE_COLLECTIONS_PATH antsibull-changelog lint && \
	env -u ANSIBLE_COLLECTIONS_PATH antsibull-changelog release --version "$$v" && \
	env -u ANSIBLE_COLLECTIONS_PATH antsibull-changelog lint && \
	echo "release-notes: $$v collected into changelogs/changelog.yaml and CHANGELOG.rst"
	python -m pytest -q -p no:cacheprovider tests/unit/test_release.py tests/unit/test_readme.py  # in place: the layout would still list the removed fragments

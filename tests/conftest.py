"""Test-wide set-up: import the collection from its ansible_collections/ layout."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
# Running from build/ansible_collections/kexec/kho: put build/ on sys.path.
if ROOT.parents[1].name == "ansible_collections":
    sys.path.insert(0, str(ROOT.parents[2]))
sys.path.insert(0, str(ROOT / "tests"))

from simtree import FIXTURES  # noqa: E402  (tests/ is on sys.path only from here)


@pytest.fixture(scope="session")
def fixtures() -> Path:
    return FIXTURES


LAB = ROOT / "tests" / "lab" / "lab.py"


def _lab(*args: str) -> dict:
    proc = subprocess.run([sys.executable, str(LAB), *args], capture_output=True, text=True, check=False)
    if proc.returncode:
        pytest.fail(f"lab.py {' '.join(args)} failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}")
    lines = proc.stdout.strip().splitlines()
    return json.loads(lines[-1]) if lines and lines[-1].startswith("{") else {}


@pytest.fixture(scope="session")
def lab_reason() -> str | None:
    proc = subprocess.run([sys.executable, str(LAB), "unavailable"], capture_output=True, text=True, check=True)
    return proc.stdout.strip() or None


class LabFactory:
    """Boots lab guests on demand (each call its own lab name) and stops them at teardown."""

    counter = 0

    def __init__(self, reason):
        if reason:
            pytest.skip(f"the KHO lab cannot run here: {reason}")
        self.started = []

    def __call__(self, count: int = 1, *extra: str) -> dict:
        LabFactory.counter += 1
        name = f"t{os.getpid()}-{LabFactory.counter}"
        self.started.append(name)
        return _lab("up", "--name", name, "-n", str(count), *extra)

    def stop(self):
        for name in self.started:
            _lab("down", "--name", name)


@pytest.fixture
def lab_factory(lab_reason):
    """Guests for one test: stopped when it ends, so that guests never pile up on 2 cores."""
    factory = LabFactory(lab_reason)
    yield factory
    factory.stop()


@pytest.fixture(scope="module")
def module_lab_factory(lab_reason):
    factory = LabFactory(lab_reason)
    yield factory
    factory.stop()


@pytest.fixture(scope="session")
def lab(lab_reason) -> dict:
    """One shared lab guest for read-only tests."""
    factory = LabFactory(lab_reason)
    yield factory()
    factory.stop()


def pytest_configure(config):
    config.addinivalue_line("markers", "lab: needs real lab guests (set on every test that uses the lab's fixtures)")
    config.addinivalue_line("markers", "lab_full: in the whole lab matrix (make test-lab) only, not the lean tier")


def pytest_collection_modifyitems(items):
    for item in items:
        if "lab_reason" in getattr(item, "fixturenames", ()):
            item.add_marker(pytest.mark.lab)


def pytest_terminal_summary(terminalreporter):
    """Print the fixed example budget of every property-based (hypothesis) test that ran."""
    budgets = []
    for reports in terminalreporter.stats.values():
        for rep in reports:
            obj = getattr(rep, "hypothesis_budget", None)
            if obj:
                budgets.append((rep.nodeid, obj))
    if budgets:
        terminalreporter.section("hypothesis example budgets")
        for nodeid, n in sorted(budgets):
            terminalreporter.write_line(f"{n:6d}  {nodeid}")
        terminalreporter.write_line(f"{sum(n for _nodeid, n in budgets):6d}  in all, over {len(budgets)} properties")


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    settings = getattr(getattr(item, "obj", None), "_hypothesis_internal_use_settings", None)
    if call.when == "call" and settings is not None and getattr(item.obj, "is_hypothesis_test", False):
        outcome.get_result().hypothesis_budget = settings.max_examples

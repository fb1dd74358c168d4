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


# The whole lab matrix runs two tests at a time (make lab-full: pytest-xdist, `-n 2 --dist loadgroup`); the lean
# tier, one.  Two tests at once share nothing but the read-only cache: each lab_factory call is a lab name of its
# own (its worker's pid in it), so its own run dir, ports, monitor, pid file and overlay, and each restored guest
# boots its own copy of the booted snapshot (lab_guests.start_qemu), whose backing disk QEMU only reads.  Tests
# that share a guest (a module- or session-scoped fixture's) are one xdist group: one worker, in their order.
# Seconds the longest tests took in the last whole matrix, one at a time (make test-lab of 6d27dff; the variant
# kernels' test in its own run; the repeats at five handovers): longest handed out first, so both workers end
# together.  A test not named counts SHORT seconds; a wrong figure costs time, never a result.
LONGEST = {
    # #35-#37's tests as measured by make test-lab of d4355d9 (fresh clone, warm); new ones estimated
    "test_a_services_fd_store_crosses_releases_both_ways_on_the_sid_guest": 330,  # estimated: two sid handovers
    "test_a_chain_through_three_releases_keeps_everything": 316,
    "test_a_new_kernel_that_fails_its_test_is_handed_back_to_the_old_one": 560,  # #36: four handovers
    "test_a_new_kernel_without_ssh_returns_by_itself_and_a_later_run_reports_it": 600,  # estimated: five boots
    "test_a_target_that_panics_and_cold_boots_is_never_acted_on": 200,  # estimated
    "test_a_target_whose_formats_moved_on_is_refused_naming_both_sides": 259,
    "test_a_packaged_modular_kernel_with_its_initramfs": 208,
    "test_a_verified_verdict_coincides_with_stage_2_passing": 181,
    "test_a_target_that_cannot_restore_the_sessions_is_refused": 247,
    "test_repeated_handovers_with_a_pstore_canary": 353,
    "test_the_default_method_keeps_a_services_fd_store": 262,
    "test_the_readme_quick_start_then_ansible_runner_hand_the_guest_over": 203,
    "test_kho_off_is_refused_then_enabled_through_grub_and_handed_over": 198,
    "test_rolling_handover_of_two_guests": 174,
    "test_lab[kho_kexec]": 160,
    "test_lab[kho_cmdline]": 153,
    "test_kexec_e_would_lose_the_fd_store_refused_then_an_accepted_loss_fails": 142,
    "test_the_default_method_keeps_the_selftests_sessions": 141,
    "test_a_run_refused_by_the_lock_leaves_the_holders_lock_and_image": 140,
    "test_connection_cut_before_the_jump_then_a_rerun_completes": 135,
    "test_host_that_never_returns_fails_alone": 130,
    "test_a_method_that_would_lose_sessions_is_refused_and_an_accepted_loss_fails": 119,
    "test_connection_cut_between_the_load_and_the_jump_is_still_one_verified_handover": 118,
    "test_lab[kho_cmdline-full_matrix]": 115,
    "test_molecule_default_scenario": 114,
    "test_alias_and_bastion_hand_over_verified": 107,
    "test_two_runs_at_once_make_one_jump": 106,
    # #38's staged mode, one module of four guests (test_staged.py), as run on its own (test_staged of this branch)
    "test_four_guests_staged_at_once_and_switched_two_at_a_time_are_all_verified": 300,
    "test_a_failed_stage_stops_the_rollout_and_the_switch_unloads_every_other_host": 150,
    "test_a_run_that_ends_after_its_stage_is_undone_by_the_host_when_the_time_runs_out": 330,
}
SHORT = 30


def shared_guest(item) -> str | None:
    """The xdist group of a test that shares a guest with others, or None for a test with guests of its own."""
    names = getattr(item, "fixturenames", ())
    if "module_lab_factory" in names:
        return f"{item.module.__name__}-guest"  # the module's guests (test_faults' quiet guest, test_rolling's fleet)
    if "lab" in names:
        return "session-guest"  # the session's read-only guest
    callspec = getattr(item, "callspec", None)  # test_targets' test_lab: the read-only guest, unless DESTRUCTIVE
    if getattr(item, "originalname", "") == "test_lab" and callspec is not None \
            and callspec.params.get("target") not in getattr(item.module, "DESTRUCTIVE", ()):
        return "session-guest"
    return None


def two_at_a_time(items) -> None:
    """Group the tests that share a guest, and order the groups longest first (stable: else as collected)."""
    groups: dict = {}
    for item in items:
        group = shared_guest(item)
        if group:
            item.add_marker(pytest.mark.xdist_group(group))
        groups.setdefault(group or item.nodeid, []).append(item)
    ordered = sorted(groups.values(), key=lambda group: -sum(LONGEST.get(i.name, SHORT) for i in group))
    items[:] = [item for group in ordered for item in group]


@pytest.hookimpl(tryfirst=True)  # before xdist reads the xdist_group marks
def pytest_collection_modifyitems(config, items):
    for item in items:
        if "lab_reason" in getattr(item, "fixturenames", ()):
            item.add_marker(pytest.mark.lab)
    if getattr(config.option, "loadgroup", False):  # an xdist worker of a `--dist loadgroup` run
        two_at_a_time(items)


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

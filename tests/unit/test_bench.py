"""The benches run (bench/controller_bench.py, bench/lab_bench.py's playbook runner): a bench that breaks is no
figure.  Small sizes here; the figures themselves are the benches' to print, not the tests' to assert."""

from __future__ import annotations

import sys
import tempfile

import pytest
from conftest import ROOT  # pylint: disable=import-error

sys.path.insert(0, str(ROOT / "bench"))
import controller_bench  # noqa: E402  pylint: disable=import-error,wrong-import-position
import lab_bench  # noqa: E402  pylint: disable=import-error,wrong-import-position


def test_the_simulated_fleet_verifies_every_host_from_its_verdict():
    fleet = controller_bench.controller_fleet(sizes=(1, 20), forks=5)
    assert [(f["hosts"], f["verified"]) for f in fleet.values()] == [(1, 1), (20, 20)]
    assert all(f["cpu_per_host"] > 0 for f in fleet.values())


def test_the_simulated_staged_fleet_switches_every_host_in_batches():
    fleet = controller_bench.staged_fleet(sizes=(20,), batch=5, forks=5)["20"]
    assert (fleet["verified"], fleet["stopped"], fleet["batch"]) == (20, 0, 5) and fleet["cpu_per_host"] > 0


def test_every_controller_target_is_a_number():
    results = controller_bench.measure(1)
    results["controller_fleet"] = controller_bench.controller_fleet(sizes=(100, 1000), forks=50)
    assert all(isinstance(v, (int, float)) for v in controller_bench.targets(results).values())


def _local(tasks: str, **kw) -> dict:
    """lab_bench.playbook on this machine (a local connection), or skipped where ansible-playbook is not beside us."""
    if not (lab_bench.BIN / "ansible-playbook").exists():
        pytest.skip(f"no ansible-playbook beside {sys.executable}")
    with tempfile.NamedTemporaryFile("w", suffix=".ini") as inv:
        inv.write(f"[kho_lab]\nlocalhost ansible_connection=local ansible_python_interpreter={sys.executable}\n")
        inv.flush()
        return lab_bench.playbook(inv.name, tasks, limit=120, **kw)


def test_a_run_is_read_from_its_json_files_not_its_text():
    """The run's end and kho_kexec's phases come from the bench's callback; the CPU split from SPLIT_CPU."""
    ran = _local("    - ansible.builtin.debug: {var: phases}\n      vars: {phases: {to_gone: 1.5}}\n")
    assert ran["seconds"] and ran["returned"] and ran["phases"] == {"to_gone": 1.5}, ran
    assert ran["split"]["main"] > 0 and "workers" in ran["split"]


def test_a_staged_run_times_its_switch_from_the_switch_plays_start():
    ran = _local("    - ansible.builtin.pause: {seconds: 1}\n", stage="    - ansible.builtin.pause: {seconds: 2}\n")
    assert ran["switch_start"] and ran["returned"] and ran["returned"] - ran["switch_start"] >= 1, ran
    assert ran["switch_start"] - ran["start"] >= 2, ran


def test_the_cpu_per_host_beyond_the_first_cancels_what_a_run_pays_once():
    one = [{"cpu": 4.0, "cpu_main": 2.0, "cpu_workers": 2.0}, {"cpu": 4.2, "cpu_main": 2.1, "cpu_workers": 2.1}, {"cpu": 5.0}]
    many = [{"cpu": 10.3, "cpu_main": 3.0, "cpu_workers": 7.3}, {"cpu": 10.0, "cpu_main": 2.9, "cpu_workers": 7.1}]
    got = lab_bench.beyond_first(one, many, 4)
    assert got == {"cpu": round((10.15 - 4.2) / 3, 3), "cpu_main": round((2.95 - 2.05) / 3, 3),
                   "cpu_workers": round((7.2 - 2.05) / 3, 3)}
    assert lab_bench.beyond_first(one, [{"cpu": None}], 4)["cpu"] is None


def test_the_rollout_stop_decided_once_per_batch_is_every_hosts_answer():
    """The role's switch asks once per batch (run_once); through real hostvars each host of every batch holds the
    same answer as when every host asks."""
    if not (lab_bench.BIN / "ansible-playbook").exists():
        pytest.skip(f"no ansible-playbook beside {sys.executable}")
    got = controller_bench.rollout_decision(sizes=(4,), batch=2, timeout=300)
    stopped = "1 of 4 hosts failed (h0), more than kho_max_fail_percentage=0"
    assert [(v["once_per_batch"], v["decided"]) for v in got.values()] == [
        (False, {f"h{i}": stopped for i in range(4)}), (True, {f"h{i}": stopped for i in range(4)})]
    assert all(v["cpu_per_host"] > 0 for v in got.values())

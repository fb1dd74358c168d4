"""Runs each integration playbook pair under playbooks/ with ansible-playbook (pytest is their runner).

simulated.yml runs on the controller against simulated KHO trees; lab.yml runs against a
real KHO guest from the lab (skipped, with the reason, where the lab cannot run).  A playbook
in DESTRUCTIVE gets a guest of its own; the others share one read-only guest.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

HERE = Path(__file__).resolve().parent
TARGETS = HERE / "playbooks"
COLLECTION = HERE.parents[1]


# Lab playbooks in the lean tier (make test); the others run in the whole lab matrix (make test-lab).  A lean
# playbook's tasks tagged FULL_ONLY are the matrix's: the lean tier skips them, and the matrix runs them as a
# test of their own (with the set-up tasks, tagged `always`), so no task runs twice.
LEAN = {"kho_cmdline"}
FULL_ONLY = "full_matrix"
# kho_cmdline edits boot files, kho_kexec loads and unloads, lab_handover jumps: each gets its own guest.
DESTRUCTIVE = {"kho_cmdline", "kho_kexec", "lab_handover"}


def _names(playbook: str) -> list:
    return sorted(t.name for t in TARGETS.iterdir() if (t / playbook).exists())


def _lab_targets() -> list:
    params = []
    for name in _names("lab.yml"):
        if name in LEAN:
            params.append(pytest.param(name, ("--skip-tags", FULL_ONLY), id=name))
            # A `tags:` line naming it (not a comment): else the twin would run only the set-up.
            if re.search(rf"^\s*tags:.*\b{FULL_ONLY}\b", (TARGETS / name / "lab.yml").read_text(), re.M):
                params.append(pytest.param(name, ("--tags", FULL_ONLY), id=f"{name}-{FULL_ONLY}",
                                           marks=pytest.mark.lab_full))
        else:
            params.append(pytest.param(name, (), id=name, marks=pytest.mark.lab_full))
    return params


def run_playbook(playbook: Path, inventory: str, tmp_path: Path, extra: dict | None = None, check: bool = True,
                 args: tuple = (), env: dict | None = None) -> subprocess.CompletedProcess:
    env = {**os.environ, "ANSIBLE_COLLECTIONS_PATH": str(COLLECTION.parents[2]), "ANSIBLE_NOCOLOR": "1",
           "ANSIBLE_HOST_KEY_CHECKING": "False", "ANSIBLE_RETRY_FILES_ENABLED": "False",
           "ANSIBLE_LOCAL_TEMP": str(tmp_path / "ansible-local"), **(env or {})}
    evars = {"kho_tests_dir": str(COLLECTION / "tests"), "kho_tmp": str(tmp_path),
             **(extra or {})}
    proc = subprocess.run(["ansible-playbook", "-i", inventory, str(playbook), "-e", json.dumps(evars), *args],
                          capture_output=True, text=True, env=env, cwd=playbook.parent, check=False)
    if check and proc.returncode:
        pytest.fail(f"{playbook} failed (rc {proc.returncode}):\n{proc.stdout[-8000:]}\n"
                    f"{proc.stderr[-3000:]}")
    return proc


@pytest.mark.parametrize("target", _names("simulated.yml"))
def test_simulated(target, tmp_path, fixtures):
    inventory = tmp_path / "inventory.ini"
    inventory.write_text(f"localhost ansible_connection=local ansible_python_interpreter={sys.executable}\n")
    run_playbook(TARGETS / target / "simulated.yml", str(inventory), tmp_path)


@pytest.mark.parametrize("target,tags", _lab_targets())
def test_lab(target, tags, tmp_path, request, lab_reason):  # lab_reason: marks it `lab`, skips where no lab
    guest = request.getfixturevalue("lab_factory")() if target in DESTRUCTIVE else request.getfixturevalue("lab")
    run_playbook(TARGETS / target / "lab.yml", guest["inventory"], tmp_path, args=tags)


def test_the_handover_playbook_refuses_to_start_without_kho_targets(tmp_path):
    """playbooks/handover.yml kexecs every host it targets: without an explicit kho_targets it stops at once."""
    inventory = tmp_path / "inventory.ini"
    inventory.write_text(f"localhost ansible_connection=local ansible_python_interpreter={sys.executable}\n"
                         "[kho]\nweb-1 ansible_host=192.0.2.1\n")
    proc = run_playbook(COLLECTION / "playbooks" / "handover.yml", str(inventory), tmp_path, check=False)
    assert proc.returncode != 0 and "set kho_targets (-e kho_targets=GROUP)" in proc.stdout, proc.stdout[-3000:]
    assert "web-1" not in proc.stdout  # no task ran on any host to hand over

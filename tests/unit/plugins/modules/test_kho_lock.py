"""The kho_lock module as Ansible runs it (one process, its arguments in a file): releasing, by hand, the lock a run
left behind, and the action group's options accepted."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from ansible_collections.kexec.kho.plugins.module_utils._kho import lock as L

ME = {"run": "ctl:1:1:ab", "target": "web-1"}
LEFT = {"run": "ctl:41877:9184523:5f0c2a9e", "target": "web-1", "user": "sre", "since": "2026-11-25T17:02:11Z"}
OTHER = {"run": "other-ctl:7:7:cd", "target": "web-1"}


def run(tmp_path: Path, check_mode: bool = False, **args) -> dict:
    argfile = tmp_path / "args.json"
    argfile.write_text(json.dumps({"ANSIBLE_MODULE_ARGS": {"_ansible_check_mode": check_mode, "owner": ME,
                                                           "path": str(tmp_path / "handover.lock"), **args}}))
    root = Path(L.__file__).resolve().parents[6]
    proc = subprocess.run([sys.executable, "-m", "ansible_collections.kexec.kho.plugins.modules.kho_lock", str(argfile)],
                          capture_output=True, text=True, check=False, env={**os.environ, "PYTHONPATH": str(root)},
                          timeout=120)
    return json.loads(proc.stdout.strip().splitlines()[-1])


@pytest.fixture
def left_behind(tmp_path) -> Path:
    path = tmp_path / "handover.lock"
    L.acquire(str(path), LEFT)
    return path


def test_another_runs_lock_is_not_released_and_the_refusal_names_the_way(tmp_path, left_behind):
    out = run(tmp_path, state="released")
    assert out["failed"] and LEFT["run"] in out["msg"] and "break_lock" in out["msg"]
    assert L.read(str(left_behind))["run"] == LEFT["run"]


def test_break_lock_releases_exactly_the_run_it_names(tmp_path, left_behind):
    out = run(tmp_path, state="released", break_lock=OTHER["run"])
    assert out["failed"] and L.read(str(left_behind))["run"] == LEFT["run"]
    would = run(tmp_path, check_mode=True, state="released", break_lock=LEFT["run"])
    assert would["changed"] and would["previous"]["run"] == LEFT["run"] and left_behind.exists()
    out = run(tmp_path, state="released", break_lock=LEFT["run"])
    assert out["changed"] and out["previous"]["run"] == LEFT["run"] and out["holder"] is None
    assert not left_behind.exists() and LEFT["run"] in out["msg"]


def test_break_lock_on_a_free_lock_changes_nothing(tmp_path):
    out = run(tmp_path, state="released", break_lock=LEFT["run"])
    assert not out.get("failed") and out["changed"] is False and "was not held" in out["msg"]
    assert not (tmp_path / "handover.lock").exists()


def test_the_action_groups_host_options_are_accepted(tmp_path):
    group = {"_internal": {"debugfs_root": "/x/debug", "procfs_root": "/x/proc"}, "mount_debugfs": True}
    taken = run(tmp_path, **group)
    assert not taken.get("failed") and taken["acquired"], taken
    assert run(tmp_path, state="released", **group)["changed"]

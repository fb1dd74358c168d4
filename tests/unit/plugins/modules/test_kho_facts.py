"""The kho_facts module as Ansible runs it (one process, its arguments in a file), against a simulated tree, with a
recording stand-in for mount(8) first on PATH: what it changes, and in which order."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import simtree

from ansible_collections.kexec.kho.plugins.module_utils._kho import lock as L

ME = {"run": "ctl:1:1:ab", "target": "web-1"}
OTHER = {"run": "other-ctl:7:7:cd", "user": "sre", "controller": "other-ctl", "since": "2026-11-27T00:00:00Z"}


@pytest.fixture
def host(tmp_path, fixtures):
    """An unmounted debugfs, a lock path, and a mount(8) that logs whether the lock was held when it ran."""
    opts = simtree.build("live-cold", tmp_path / "t")
    (tmp_path / "t" / "proc" / "mounts").write_text("sysfs /sys sysfs rw 0 0\n")
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    lock_path, log = tmp_path / "run" / "handover.lock", tmp_path / "mount.log"
    fake = bin_dir / "mount"
    fake.write_text(f'#!/bin/sh\nif [ -e "{lock_path}" ]; then echo locked; else echo unlocked; fi >> "{log}"\n'
                    'exit "${FAKE_MOUNT_RC:-0}"\n')
    fake.chmod(0o755)
    return {"opts": opts, "bin": bin_dir, "lock": lock_path, "log": log}


def run(host, rc=0) -> dict:
    args = {"_internal": host["opts"]["_internal"], "mount_debugfs": True, "kernel_log": False, "lock": {"path": str(host["lock"]), "owner": ME}}
    argfile = host["bin"].parent / "args.json"
    argfile.write_text(json.dumps({"ANSIBLE_MODULE_ARGS": {"_ansible_check_mode": False, **args}}))
    root = Path(L.__file__).resolve().parents[6]
    env = {**os.environ, "PYTHONPATH": str(root), "PATH": f"{host['bin']}:{os.environ['PATH']}", "FAKE_MOUNT_RC": str(rc)}
    proc = subprocess.run([sys.executable, "-m", "ansible_collections.kexec.kho.plugins.modules.kho_facts", str(argfile)],
                          capture_output=True, text=True, check=False, env=env, timeout=120)
    return json.loads(proc.stdout.strip().splitlines()[-1])


def mounts(host) -> list:
    return host["log"].read_text().split() if host["log"].exists() else []


def test_a_run_the_lock_refuses_changes_nothing_not_even_the_mount(host):
    """Issue 37: debugfs was mounted before the lock was taken, so a refused run changed the host's mounts."""
    L.acquire(str(host["lock"]), OTHER)
    before = host["lock"].read_bytes()
    out = run(host)
    assert out["lock"]["acquired"] is False and out["changed"] is False, out
    assert mounts(host) == [] and host["lock"].read_bytes() == before


def test_debugfs_is_mounted_under_the_lock(host):
    out = run(host)
    assert out["lock"]["acquired"] and out["changed"] and not out.get("failed"), out
    assert mounts(host) == ["locked"] and L.read(str(host["lock"]))["run"] == ME["run"]


def test_a_mount_that_fails_gives_the_lock_back(host):
    out = run(host, rc=32)
    assert out["failed"] and mounts(host) == ["locked"], out
    assert L.read(str(host["lock"])) is None

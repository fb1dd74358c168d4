"""Handovers that jump for real, repeatedly or concurrently, on a guest of their own."""

from __future__ import annotations

import json
import os
import subprocess

import pytest
from test_role import KERNEL, PLAYBOOK, facts, handover

pytestmark = pytest.mark.lab_full  # make test-lab; the lean tier is in test_role and test_targets

REPEAT = int(os.environ.get("KHO_REPEAT", "10"))


def test_two_runs_at_once_make_one_jump(lab_factory, tmp_path):
    guests = lab_factory()
    procs = []
    for n in range(2):
        (tmp_path / str(n)).mkdir()
        env = dict(os.environ, ANSIBLE_COLLECTIONS_PATH=str(PLAYBOOK.parents[3]), ANSIBLE_NOCOLOR="1",
                   ANSIBLE_HOST_KEY_CHECKING="False", ANSIBLE_LOCAL_TEMP=str(tmp_path / str(n) / "tmp"))
        procs.append(subprocess.Popen(["ansible-playbook", "-i", guests["inventory"], str(PLAYBOOK),
                                       "-e", json.dumps({"kho_handover_kernel": KERNEL})],
                                      stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env))
    outs = [p.communicate(timeout=900)[0] for p in procs]
    codes = sorted(p.returncode for p in procs)
    assert codes[0] == 0 and codes[1] != 0, outs
    assert any("another handover holds /run/kexec-kho/handover.lock" in o for o in outs), outs
    state = next(iter(facts(guests, tmp_path).values()))
    assert state["in"]["kexec_metadata"]["kexec_count"] == 1  # exactly one jump


def test_repeated_handovers_with_a_pstore_canary(lab_factory, tmp_path):
    guests = lab_factory()
    name = guests["guests"][0]["name"]
    starts = set()
    for n in range(1, REPEAT + 1):
        proc, summary = handover(guests, tmp_path, kho_handover_canary=True)
        assert proc.returncode == 0, f"handover {n}: {proc.stdout[-4000:]}"
        r = summary[name]
        assert r["verdict"] == "verified" and r["kexec_count"] == n, r
        starts |= {(g["name"], g["start_before"], g["start_after"]) for g in r["regions"]}
    print(f"{REPEAT} handovers in a row, kexec_count 1..{REPEAT}, regions {sorted(starts)}")
    assert len(starts) == 1 and len({(s[1], s[2]) for s in starts}) == 1  # the region never moved

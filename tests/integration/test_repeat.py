"""Handovers that jump for real, repeatedly or concurrently, on a guest of their own."""

from __future__ import annotations

import json
import os
import subprocess
import time
from pathlib import Path

import pytest
from test_role import KERNEL, PLAYBOOK, facts, handover
from test_targets import run_playbook

pytestmark = pytest.mark.lab_full  # make test-lab; the lean tier is in test_role and test_targets

# Handovers in a row, chained (from the second on, out of a kernel that was itself handed over): kexec_count
# 1..REPEAT, each verified with its pstore canary, and the preserved region at one address before and after every
# jump (the leak check: every round's addresses are compared with the first round's, so a region leaked or moved
# by a jump shows from the second jump on).  Five prove what ten did (ten took 16.3 of the last whole matrix's 70
# minutes); only a fault that needs more than five jumps to show would go unseen: KHO_REPEAT=10 runs ten.
REPEAT = int(os.environ.get("KHO_REPEAT", "5"))


def test_two_runs_at_once_make_one_jump(lab_factory, tmp_path):
    guests = lab_factory()
    procs = []
    for n in range(2):
        (tmp_path / str(n)).mkdir()
        env = dict(os.environ, ANSIBLE_COLLECTIONS_PATH=str(PLAYBOOK.parents[3]), ANSIBLE_NOCOLOR="1",
                   ANSIBLE_HOST_KEY_CHECKING="False", ANSIBLE_LOCAL_TEMP=str(tmp_path / str(n) / "tmp"))
        procs.append(subprocess.Popen(["ansible-playbook", "-i", guests["inventory"], str(PLAYBOOK),
                                       "-e", json.dumps({"kho_handover_kernel": KERNEL, "kho_targets": "all"})],
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


HOLDER = """- hosts: kho_lab
  gather_facts: false
  become: true
  tasks:
    - name: Run A takes the lock and loads its image, then waits for run B
      kexec.kho.kho_lock:
    - kexec.kho.kho_kexec:
        state: loaded
        kernel: {kernel}
    - ansible.builtin.file: {{path: "{{{{ kho_tmp }}}}/a-ready", state: touch, mode: "0644"}}
      delegate_to: localhost
    - ansible.builtin.wait_for: {{path: "{{{{ kho_tmp }}}}/b-done", timeout: 900}}
      delegate_to: localhost
    - name: Then run A hands the host over itself
      ansible.builtin.include_role:
        name: kexec.kho.handover
      vars:
        kho_handover_kernel: {kernel}
"""


def test_a_run_refused_by_the_lock_leaves_the_holders_lock_and_image(lab_factory, tmp_path):
    guests = lab_factory()
    name = guests["guests"][0]["name"]
    (tmp_path / "a").mkdir()
    playbook = tmp_path / "holder.yml"
    playbook.write_text(HOLDER.format(kernel=KERNEL))
    env = dict(os.environ, ANSIBLE_COLLECTIONS_PATH=str(PLAYBOOK.parents[3]), ANSIBLE_NOCOLOR="1",
               ANSIBLE_HOST_KEY_CHECKING="False", ANSIBLE_LOCAL_TEMP=str(tmp_path / "a" / "tmp"),
               ANSIBLE_CALLBACKS_ENABLED="kexec.kho.kho_report", KHO_REPORT_JSON=str(tmp_path / "a" / "summary.json"))
    holder = subprocess.Popen(["ansible-playbook", "-i", guests["inventory"], str(playbook),
                               "-e", json.dumps({"kho_tmp": str(tmp_path)})],
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env)
    try:
        deadline = time.monotonic() + 600
        while not (tmp_path / "a-ready").exists():
            assert holder.poll() is None and time.monotonic() < deadline, holder.communicate()[0] if holder.poll() else ""
            time.sleep(1)
        lock_before = guest_cat(guests, tmp_path, "/run/kexec-kho/handover.lock")
        proc, summary = handover(guests, tmp_path)  # run B, the role: refused by the lock
        assert proc.returncode != 0 and "another handover holds /run/kexec-kho/handover.lock" in proc.stdout
        assert "this run undid: nothing left to undo" in proc.stdout, proc.stdout[-3000:]
        state = facts(guests, tmp_path)[name]
        assert state["kexec_loaded"] is True, "the refused run unloaded the holder's image"
        assert guest_cat(guests, tmp_path, "/run/kexec-kho/handover.lock") == lock_before
    finally:
        (tmp_path / "b-done").touch()
    out = holder.communicate(timeout=900)[0]
    assert holder.returncode == 0, out[-4000:]
    assert json.loads((tmp_path / "a" / "summary.json").read_text())[name]["verdict"] == "verified"


def guest_cat(guests: dict, tmp_path: Path, path: str) -> str:
    playbook = tmp_path / "cat.yml"
    playbook.write_text("- hosts: kho_lab\n  gather_facts: false\n  become: true\n  tasks:\n"
                        f"    - ansible.builtin.slurp: {{src: {path}}}\n      register: f\n"
                        "    - ansible.builtin.copy: {content: '{{ f.content | b64decode }}', dest: '{{ kho_tmp }}/cat.out',"
                        " mode: '0644'}\n      delegate_to: localhost\n")
    run_playbook(playbook, guests["inventory"], tmp_path)
    return (tmp_path / "cat.out").read_text()

"""Staged mode on real lab guests (issue 38): four guests staged at once while they serve, switched two at a time,
every one verified; and each way a staged rollout can stop between its stage and its switch leaves nothing loaded
or locked: the rollout stopped by a failed stage (the switch unloads the others), and a run that ended after its
stage (the host's own expiry unloads it)."""

from __future__ import annotations

import json
import time

import pytest
from test_role import handover
from test_targets import run_playbook

pytestmark = pytest.mark.lab_full  # make test-lab

STATE = "/run/kexec-kho"


def host_state(guests: dict, tmp_path) -> dict:
    """Per guest: whether an image is loaded, the lock's and the stage's files, the boot id and kho_facts' stage."""
    playbook = tmp_path / "state.yml"
    playbook.write_text(
        "- hosts: kho_lab\n  gather_facts: false\n  become: true\n  tasks:\n"
        "    - kexec.kho.kho_facts:\n"
        "    - ansible.builtin.command:\n"
        f"        argv: [sh, -c, 'cat /sys/kernel/kexec_loaded; ls {STATE}; echo; cat /proc/sys/kernel/random/boot_id']\n"
        "      register: seen\n      changed_when: false\n"
        "    - ansible.builtin.copy:\n"
        "        content: '{{ {\"seen\": seen.stdout_lines, \"stage\": ansible_facts.kho.stage} | to_json }}'\n"
        "        dest: '{{ kho_tmp }}/{{ inventory_hostname }}.state.json'\n        mode: '0644'\n"
        "      delegate_to: localhost\n")
    run_playbook(playbook, guests["inventory"], tmp_path)
    out = {}
    for g in guests["guests"]:
        got = json.loads((tmp_path / f"{g['name']}.state.json").read_text())
        lines = got["seen"]
        out[g["name"]] = {"loaded": lines[0] == "1", "files": lines[1:-2], "boot_id": lines[-1], "stage": got["stage"]}
    return out


@pytest.fixture(scope="module")
def four(module_lab_factory):
    return module_lab_factory(4)


def test_four_guests_staged_at_once_and_switched_two_at_a_time_are_all_verified(four, tmp_path):
    proc, summary = handover(four, tmp_path, kho_staged=True, kho_serial=2)
    assert proc.returncode == 0, proc.stdout[-8000:]
    assert proc.stdout.count("PLAY [Stage every host (staged mode)]") == 1  # every host at once
    assert proc.stdout.count("PLAY [Switch the staged hosts, batch by batch (staged mode)]") == 2  # two batches
    for g in four["guests"]:
        r = summary[g["name"]]
        assert r["verdict"] == "verified", r
        assert r["switched_from_stage"] is True, r  # the switch loaded nothing again
        assert r["switched_by"] == "shell", r  # ... and ran no module before the jump
        assert r["kexec_count"] == 1 and r["boot_id_after"] != r["boot_id_before"]
    after = host_state(four, tmp_path)
    assert all(not s["loaded"] and "handover.lock" not in s["files"] for s in after.values()), after


def test_a_failed_stage_stops_the_rollout_and_the_switch_unloads_every_other_host(four, tmp_path):
    before = host_state(four, tmp_path)
    bad = four["guests"][0]["name"]
    proc, summary = handover(four, tmp_path, kho_staged=True, kho_serial=2,
                             host_vars={bad: {"kho_handover_initrd": "/boot/no-such-initrd"}})
    assert proc.returncode != 0
    assert summary[bad]["failed_step"] in ("preflight", "stage") and summary[bad]["verdict"] == "refused, nothing changed"
    for g in four["guests"][1:]:
        r = summary[g["name"]]
        assert r["failed_step"] == "switch" and r["verdict"] == "failed, rolled back", r
        # the hosts failed so far, the bad one first (a later batch also counts the earlier batch's stopped hosts)
        assert "the rollout stopped before this host's switch: " in r["error"] and f"({bad}" in r["error"], r
    after = host_state(four, tmp_path)
    for name, s in after.items():
        assert s["boot_id"] == before[name]["boot_id"], name  # nothing jumped
        assert not s["loaded"] and "handover.lock" not in s["files"] and "staged" not in s["files"], (name, s)


def test_a_run_that_ends_after_its_stage_is_undone_by_the_host_when_the_time_runs_out(four, tmp_path):
    stage_only = tmp_path / "stage.yml"
    stage_only.write_text("- hosts: kho_lab\n  gather_facts: false\n  become: true\n  roles:\n"
                          "    - role: kexec.kho.handover\n      vars:\n        kho_handover_part: stage\n")
    ttl = 90  # the read below must come before it: four emulated guests read one after the other take tens of seconds
    proc = run_playbook(stage_only, four["inventory"], tmp_path,
                        extra={"kho_handover_kernel": "/boot/vmlinuz-kho", "kho_handover_stage_ttl": ttl}, check=False)
    assert proc.returncode == 0, proc.stdout[-6000:]
    staged = host_state(four, tmp_path)
    assert all(s["loaded"] and "handover.lock" in s["files"] and s["stage"]["staged"] for s in staged.values()), staged
    time.sleep(ttl)
    for _round in range(12):  # the four timers fire TTL after each host's own stage, under TCG seconds apart
        after = host_state(four, tmp_path)
        if all(s["stage"]["expired"] for s in after.values()):
            break
        time.sleep(10)
    for name, s in after.items():
        assert not s["loaded"] and "handover.lock" not in s["files"] and "staged" not in s["files"], (name, s)
        note = s["stage"]["expired"]
        assert note["state"] == "unloaded" and note["run"] == staged[name]["stage"]["staged"]["run"], (name, s)
    # A later run says it, and hands over as if nothing had been staged.
    proc, summary = handover(four, tmp_path, kho_staged=True, kho_serial=4)
    assert proc.returncode == 0, proc.stdout[-6000:]
    assert proc.stdout.count("never switched to it: the host ended it") == 4
    assert all(summary[g["name"]]["verdict"] == "verified" for g in four["guests"])

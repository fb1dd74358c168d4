"""The host's own return ("commit confirmed", #36) on real guests: armed before the jump (confirm_timeout), it hands a
new kernel that never answers back to the old one by itself; a confirmed handover leaves nothing; a cold boot never
acts.  What is on disk after each run is read with kho_facts (its self_return.present), and what the armed script
did with the serial console (it writes its word to /dev/kmsg on each boot it runs on).

    make layout-lab host venv-oldest
    cd build-lab/ansible_collections/kexec/kho && ANSIBLE_COLLECTIONS_PATH=$PWD/../../.. \
        python -m pytest -ra -p no:cacheprovider -m lab tests/integration/test_lab_self_return.py
"""

from __future__ import annotations

import json

import pytest
from test_faults import guest_run
from test_lab_return import EXEC_FROM, serial_lines
from test_releases import copy_kernels, record, releases  # noqa: F401  pylint: disable=unused-import
from test_role import KERNEL, facts, handover
from test_targets import run_playbook

SAID = "kexec-kho-return:"  # the armed script's word in the kernel log
NO_SSH = "systemd.mask=ssh.service"  # the new kernel boots, and nothing answers on it
NOTHING = {"note": None, "present": []}


def old_kernel_on_disk(guests, tmp_path) -> None:
    """The lab's image where a distribution puts the running release (/boot/vmlinuz-7.3.4): the way back exists."""
    guest_run(guests, tmp_path, f"    - ansible.builtin.copy: {{src: {KERNEL}, dest: /boot/vmlinuz-7.3.4, "
                                "remote_src: true, mode: '0644'}\n")


def left(guests, tmp_path) -> dict:
    return next(iter(facts(guests, tmp_path).values()))


def jump_alone(guests, tmp_path, **args) -> dict:
    """kho_kexec state=executed in a playbook of its own (no role): its registered result."""
    playbook = tmp_path / "jump.yml"
    playbook.write_text(
        "- hosts: kho_lab\n  gather_facts: false\n  tasks:\n"
        f"    - kexec.kho.kho_kexec: {json.dumps({'state': 'executed', **args})}\n"
        "      register: jump\n      ignore_errors: true\n"
        "    - ansible.builtin.copy:\n        content: '{{ jump | to_json }}'\n        dest: '{{ kho_tmp }}/jump.json'\n"
        "        mode: '0644'\n      delegate_to: localhost\n")
    proc = run_playbook(playbook, guests["inventory"], tmp_path, check=False)
    assert (tmp_path / "jump.json").exists(), proc.stdout[-4000:]
    return json.loads((tmp_path / "jump.json").read_text())


def test_a_handover_confirmed_in_time_leaves_nothing_armed(lab_factory, tmp_path):
    """Lean tier: armed, jumped, verified, confirmed; the script on the new boot saw the confirm and did nothing."""
    guests = lab_factory()
    name = guests["guests"][0]["name"]
    old_kernel_on_disk(guests, tmp_path)
    proc, summary = handover(guests, tmp_path, kho_handover_confirm_timeout=300)
    result = summary[name]
    assert proc.returncode == 0 and result["verdict"] == "verified" and result["kexec_count"] == 1, proc.stdout[-5000:]
    after = left(guests, tmp_path)
    assert after["self_return"] == NOTHING and after["boot_id"] == result["boot_id_after"], after["self_return"]
    said = serial_lines(guests, SAID)
    assert any("the kexec of run" in line for line in said) and any("confirmed: nothing done" in line for line in said)
    assert not any("returning to" in line for line in said), said


@pytest.mark.lab_full
def test_a_new_kernel_without_ssh_returns_by_itself_and_a_later_run_reports_it(lab_factory, tmp_path, releases):  # noqa: F811
    """7.3.4 -> 7.2.13 whose line masks sshd: the host goes back to 7.3.4 by itself at 60 s of the new kernel's
    uptime.  Under the role the verdict says so, from the note and the old kernel's own facts; under kho_kexec alone
    the note stays, and the next run of the role reports it, removes it and hands over verified."""
    guests = lab_factory()
    name = guests["guests"][0]["name"]
    copy_kernels(guests, tmp_path, {"/boot/vmlinuz-7.2.13": releases["7.2.13"]})
    old_kernel_on_disk(guests, tmp_path)
    first = left(guests, tmp_path)

    proc, summary = handover(guests, tmp_path, kho_handover_kernel="/boot/vmlinuz-7.2.13", kho_handover_append=NO_SSH,
                             kho_handover_confirm_timeout=60)
    result = summary[name]
    assert proc.returncode != 0, "a host that returned by itself is still a failed run"
    assert result["verdict"] == "returned by the host: not confirmed within 60 s", result
    way = result["way_back"]
    assert way["by_host"] is True and way["returned_to"] == "7.3.4" and way["return"]["failures"] == [], way
    assert "oops" in way["return"]["taken"]["kept"], way["return"]
    home = left(guests, tmp_path)
    meta = home["in"]["kexec_metadata"]
    assert (home["release"], meta["previous_release"], meta["kexec_count"]) == ("7.3.4", "7.2.13", 2), meta
    assert home["self_return"] == NOTHING and home["kexec_loaded"] is False, home["self_return"]
    said = [line for line in serial_lines(guests, SAID) if "returning to 7.3.4" in line]
    both = serial_lines(guests, EXEC_FROM)[-2:]
    assert said and "7.3.4" in both[0] and "7.2.13" in both[1], (said, both)
    record({"pair": "7.3.4 -> 7.2.13 (sshd masked) -> 7.3.4 by the host itself (confirm_timeout 60)",
            "verdict": result["verdict"], "kept": way["return"]["taken"]["kept"], "refused": None,
            "evidence": {"the script on 7.2.13": said[-1:], "both kernels' log": both, "decision": way["decision"]}})

    # kho_kexec alone: it waits for the return too, and leaves the note; the next run reports and removes it.
    jump = jump_alone(guests, tmp_path, kernel="/boot/vmlinuz-7.2.13", append=NO_SSH, confirm_timeout=60,
                      kexec_timeout=300, facts_after=True)
    note = jump["self_return"]["note"]
    assert jump["jumped"] is True and note["state"] == "returning" and note["run_id"] == jump["run_id"], jump
    assert jump["ansible_facts"]["kho"]["release"] == "7.3.4" and jump["boot_id_after"] != note["new_boot_id"], jump
    assert left(guests, tmp_path)["self_return"]["note"]["run_id"] == jump["run_id"]
    proc, summary = handover(guests, tmp_path)
    later = summary[name]
    assert proc.returncode == 0 and later["verdict"] == "verified", proc.stdout[-5000:]
    assert later["earlier_return"]["run_id"] == jump["run_id"] and later["earlier_return"]["state"] == "returning"
    assert left(guests, tmp_path)["self_return"] == NOTHING
    assert first["boot_id"] not in (later["boot_id_before"], later["boot_id_after"])


@pytest.mark.lab_full
def test_a_target_that_panics_and_cold_boots_is_never_acted_on(lab_factory, tmp_path):
    """The new line cannot mount a root: the new kernel panics (panic=-1), the guest cold-boots its old kernel; the
    armed script runs on that cold boot, finds no handover, removes itself and does nothing; no return is made."""
    guests = lab_factory()
    name = guests["guests"][0]["name"]
    old_kernel_on_disk(guests, tmp_path)
    proc, summary = handover(guests, tmp_path, kho_handover_append="root=/dev/nonexistent",
                             kho_handover_confirm_timeout=60)
    result = summary[name]
    assert proc.returncode != 0 and result["verdict"] == "failed after the jump", result
    assert "a cold boot" in result["way_back"]["decision"] and result["way_back"]["returned"] is False, result
    after = left(guests, tmp_path)
    assert after["in"]["present"] is False and after["self_return"] == NOTHING, after["self_return"]
    said = serial_lines(guests, SAID)
    assert any("no handover data" in line and "nothing done" in line for line in said), said
    assert not any("returning to" in line for line in said), said

"""The fault matrix on real lab guests: each way a handover can go wrong ends cleanly."""

from __future__ import annotations

from pathlib import Path

import pytest
from test_role import facts, handover
from test_targets import run_playbook


def guest_run(guests: dict, tmp_path: Path, tasks: str, check: bool = True, user: str | None = None):
    """Run a few tasks (YAML, indented 4) on the lab guests."""
    playbook = tmp_path / "tasks.yml"
    playbook.write_text("- hosts: kho_lab\n  gather_facts: false\n  tasks:\n" + tasks)
    args = ("-e", f"ansible_user={user}") if user else ()
    return run_playbook(playbook, guests["inventory"], tmp_path, check=check, args=args)


@pytest.fixture(scope="module")
def quiet_guest(module_lab_factory):
    """One guest for the faults that must leave it as it was (no jump)."""
    return module_lab_factory()


def assert_untouched(guests, tmp_path):
    state = next(iter(facts(guests, tmp_path).values()))
    assert state["kexec_loaded"] is False and state["in"]["present"] is False
    lock = guest_run(guests, tmp_path, "    - ansible.builtin.stat: {path: /run/kexec-kho/handover.lock}\n"
                                       "      register: l\n    - ansible.builtin.assert: {that: not l.stat.exists}\n",
                     check=False)
    assert lock.returncode == 0, "the handover lock was left behind"


def test_missing_initrd_is_refused_in_preflight(quiet_guest, tmp_path):
    proc, summary = handover(quiet_guest, tmp_path, kho_handover_initrd="/boot/no-such-initrd.img")
    assert proc.returncode != 0
    assert "initrd /boot/no-such-initrd.img does not exist" in proc.stdout
    assert next(iter(summary.values()))["failed_step"].startswith("Check the image")
    assert_untouched(quiet_guest, tmp_path)


def test_missing_kexec_is_refused_in_preflight(quiet_guest, tmp_path):
    guest_run(quiet_guest, tmp_path, "    - ansible.builtin.command: mv /usr/sbin/kexec /usr/sbin/kexec.away\n"
                                     "      changed_when: true\n")
    try:
        proc, _summary = handover(quiet_guest, tmp_path)
    finally:
        guest_run(quiet_guest, tmp_path, "    - ansible.builtin.command: mv /usr/sbin/kexec.away /usr/sbin/kexec\n"
                                         "      changed_when: true\n")
    assert proc.returncode != 0
    assert "install kexec-tools (2.0.14 or later, for kexec -s)" in proc.stdout
    assert_untouched(quiet_guest, tmp_path)


def test_unmounted_debugfs(quiet_guest, tmp_path):
    guest_run(quiet_guest, tmp_path, "    - ansible.builtin.command: umount /sys/kernel/debug\n      changed_when: true\n"
                                     "    - kexec.kho.kho_facts:\n      register: f\n"
                                     "    - ansible.builtin.assert:\n        that:\n"
                                     "          - not ansible_facts.kho.debugfs_mounted\n"
                                     "          - \"'mount_debugfs' in ansible_facts.kho.reason\"\n"
                                     "    - kexec.kho.kho_finalize: {state: finalized}\n      register: fin\n"
                                     "      failed_when: fin is not failed or 'mount_debugfs' not in fin.msg\n"
                                     "    - kexec.kho.kho_facts: {mount_debugfs: true}\n      register: m\n"
                                     "    - ansible.builtin.assert:\n        that:\n"
                                     "          - m is changed and ansible_facts.kho.debugfs_mounted\n"
                                     "          - ansible_facts.kho.interface == 'live'\n")


def test_every_module_says_become_without_root(quiet_guest, tmp_path):
    tasks = ""
    for module, args in (("kho_facts", "{}"), ("kho_finalize", "{state: finalized}"),
                         ("kho_kexec", "{state: loaded, kernel: /boot/vmlinuz-kho}"),
                         ("kho_cmdline", "{bootloader: kernel-install, reserve_mem: [{size: 2M, label: x}]}")):
        tasks += (f"    - kexec.kho.{module}: {args}\n      register: r\n"
                  "      failed_when: r is not failed or 'become' not in r.msg\n")
    guest_run(quiet_guest, tmp_path, tasks, user="lab")


def test_load_unloaded_behind_the_roles_back_is_caught_before_the_jump(quiet_guest, tmp_path):
    # An unloader waits for our load, then takes it away: systemctl kexec would load its own image.
    guest_run(quiet_guest, tmp_path, "    - ansible.builtin.command:\n        argv: [systemd-run, --unit=unloader, sh, -c,\n"
                                     "               'until grep -q 1 /sys/kernel/kexec_loaded; do sleep 0.05; done; kexec -u']\n"
                                     "      changed_when: true\n")
    proc, summary = handover(quiet_guest, tmp_path, kho_handover_method="systemctl")
    assert proc.returncode != 0
    result = next(iter(summary.values()))
    assert result["verdict"] == "failed, rolled back", result
    # caught by the load's own check, or by the guard in the jump command, whichever comes first
    assert "no kexec image is loaded" in result["error"] or "kexec_loaded is still 0" in result["error"], result
    assert_untouched(quiet_guest, tmp_path)

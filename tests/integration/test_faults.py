"""The fault matrix on real lab guests: each way a handover can go wrong ends cleanly."""

from __future__ import annotations

from pathlib import Path

import pytest
from test_role import KERNEL, NO_REGIONS_CMDLINE, facts, handover
from test_targets import run_playbook

pytestmark = pytest.mark.lab_full  # make test-lab; the lean tier is in test_role and test_targets


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
    assert next(iter(summary.values()))["failed_step"] == "preflight"
    assert_untouched(quiet_guest, tmp_path)


def test_check_mode_is_a_dry_run(quiet_guest, tmp_path):
    """--check: the preflight reads for real, the plan is reported, nothing on the guest changes, the run passes."""
    proc, summary = handover(quiet_guest, tmp_path, cli=("--check",))
    assert proc.returncode == 0, proc.stdout[-6000:]
    result = next(iter(summary.values()))
    assert result["verdict"] == "would hand over" and result["boot_id_after"] is None, result
    plan = result["plan"]
    assert plan["kernel"] == KERNEL and plan["initrd"] is None and plan["method"] == "kexec", plan
    assert "kho=on" in plan["cmdline"] and plan["argv"][:3] == ["/usr/sbin/kexec", "-s", "-l"], plan
    assert plan["regions"] == ["oops"] and plan["lock"] == "/run/kexec-kho/handover.lock", plan
    assert plan["finalize"] is False and plan["enable_and_reboot_first"] is False, plan
    assert "would hand over" in proc.stdout
    assert_untouched(quiet_guest, tmp_path)


OLD_KEXEC = """\
    - ansible.builtin.copy:
        dest: /usr/sbin/kexec
        mode: "0755"
        content: |
          #!/bin/sh
          # kexec-tools before 2.0.14: the real binary with its -s (kexec_file_load) taken out of its help
          /usr/sbin/kexec.away "$@" 2>&1 | grep -v -e kexec-file-syscall
"""


@pytest.mark.parametrize("fault", ["missing", "without -s"])
def test_missing_or_old_kexec_is_refused_in_preflight(quiet_guest, tmp_path, fault):
    guest_run(quiet_guest, tmp_path, "    - ansible.builtin.command: mv /usr/sbin/kexec /usr/sbin/kexec.away\n"
                                     "      changed_when: true\n" + (OLD_KEXEC if fault == "without -s" else ""))
    try:
        proc, _summary = handover(quiet_guest, tmp_path)
    finally:
        guest_run(quiet_guest, tmp_path, "    - ansible.builtin.command: mv -f /usr/sbin/kexec.away /usr/sbin/kexec\n"
                                         "      changed_when: true\n")
    assert proc.returncode != 0
    expected = {"missing": "kexec not found on the host: install kexec-tools (2.0.14 or later, for kexec -s)",
                "without -s": "/usr/sbin/kexec has no -s (kexec_file_load): KHO needs the in-kernel file loader, "
                              "install kexec-tools 2.0.14 or later"}[fault]
    assert expected in proc.stdout, proc.stdout[-3000:]
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
    # the load taken away by another: nothing of this run's left to undo, or its rollback unloaded what was queued
    assert result["verdict"] in ("failed, rolled back", "refused, nothing changed"), result
    # caught by the load's own check, before queueing, or by the queued job's guard, whichever comes first
    assert any(why in result["error"] for why in ("kexec_loaded is still 0", "no kexec image is loaded right before",
                                                  "no kexec image was loaded any more when the jump was due")), result
    assert result["boot_id_after"] is None and result["kexec_count"] is None, result  # never jumped
    assert_untouched(quiet_guest, tmp_path)


def tool_wrapper(tool: str, *lines: str) -> str:
    """Tasks that move a tool to TOOL.real and put a shell script (these lines) in its place."""
    return (f"    - ansible.builtin.command: mv {tool} {tool}.real\n      changed_when: true\n"
            f"    - ansible.builtin.copy:\n        dest: {tool}\n        mode: \"0755\"\n        content: |\n"
            + "".join(f"          {line}\n" for line in ("#!/bin/sh", *lines)))


def kexec_wrapper(*lines: str) -> str:
    """Tasks that put a shell script (these lines) in place of /usr/sbin/kexec, the real one at kexec.real."""
    return tool_wrapper("/usr/sbin/kexec", *lines)


CUT_IN_PREFLIGHT = tool_wrapper(
    "/usr/bin/systemd-analyze",
    "# Fires once, inside the role's preflight read (kho_facts asks systemd-analyze for the boot's phases):",
    "# the lock is held, nothing is loaded, and every SSH session dies.",
    "mv -f /usr/bin/systemd-analyze.real /usr/bin/systemd-analyze",
    "pkill -KILL -f '^sshd: root'",
    'exec /usr/bin/systemd-analyze "$@"',
)


def test_connection_cut_before_the_jump_then_a_rerun_completes(lab_factory, tmp_path):
    """A run cut off after it took the lock: the host is left as it was but locked; a rerun takes the lock over."""
    guests = lab_factory()
    name = guests["guests"][0]["name"]
    before = facts(guests, tmp_path)[name]
    guest_run(guests, tmp_path, CUT_IN_PREFLIGHT)
    (tmp_path / "cut").mkdir()
    (tmp_path / "rerun").mkdir()
    cut, _summary = handover(guests, tmp_path / "cut")
    assert cut.returncode != 0 and "UNREACHABLE" in cut.stdout, cut.stdout[-3000:]
    left = facts(guests, tmp_path)[name]
    assert left["boot_id"] == before["boot_id"] and left["kexec_loaded"] is False  # nothing loaded, nothing jumped
    proc, summary = handover(guests, tmp_path / "rerun", cli=("-v",))
    assert proc.returncode == 0, proc.stdout[-4000:]
    assert "took over the lock of run" in proc.stdout and "has exited" in proc.stdout
    result = summary[name]
    assert result["verdict"] == "verified" and result["boot_id_before"] == before["boot_id"], result
    assert result["kexec_count"] == 1, result  # exactly one jump across both runs


CUT_AFTER_LOAD = kexec_wrapper(
    "# Fires once: the load succeeds, then every SSH session dies, inside the run that loads and queues the jump.",
    '/usr/sbin/kexec.real "$@"; rc=$?',
    "if [ \"$2\" = -l ]; then",
    "  mv -f /usr/sbin/kexec.real /usr/sbin/kexec",
    "  pkill -KILL -f '^sshd: root'",
    "fi",
    "exit $rc",
)


def test_connection_cut_between_the_load_and_the_jump_is_still_one_verified_handover(lab_factory, tmp_path):
    """The run on the host goes on without its session: it queues the jump; the polls see the new boot."""
    guests = lab_factory()
    name = guests["guests"][0]["name"]
    before = facts(guests, tmp_path)[name]
    guest_run(guests, tmp_path, CUT_AFTER_LOAD)
    proc, summary = handover(guests, tmp_path)
    assert proc.returncode == 0, proc.stdout[-4000:]
    result = summary[name]
    assert result["verdict"] == "verified" and result["boot_id_before"] == before["boot_id"], result
    assert result["kexec_count"] == 1 and result["boot_id_after"] != before["boot_id"], result


CUT_AND_SILENT_AFTER_LOAD = kexec_wrapper(
    "# Fires once: the load succeeds, then the old boot stops answering SSH at all (its listener stopped, every",
    "# session killed) inside the run that loads, reads the boot id and queues the jump: that answer is lost.",
    '/usr/sbin/kexec.real "$@"; rc=$?',
    "if [ \"$2\" = -l ]; then",
    "  mv -f /usr/sbin/kexec.real /usr/sbin/kexec",
    "  systemctl stop ssh.socket 2>/dev/null; systemctl stop ssh.service",
    "  pkill -KILL -f '^sshd: root'",
    "fi",
    "exit $rc",
)


def test_a_lost_boot_id_is_unknown_and_fails_safe(lab_factory, tmp_path):
    """kho_kexec alone reads the old boot id in the load's run.  That answer lost and the old boot silent, the first
    answer comes from a boot without a jump status: jumped is unknown (null), the task fails, nothing is undone."""
    guests = lab_factory()
    name = guests["guests"][0]["name"]
    before = facts(guests, tmp_path)[name]
    guest_run(guests, tmp_path, CUT_AND_SILENT_AFTER_LOAD)
    proc = guest_run(guests, tmp_path, f"    - kexec.kho.kho_kexec: {{state: executed, kernel: {KERNEL}}}\n"
                                       "      register: jump\n      ignore_errors: true\n"
                                       "    - ansible.builtin.assert:\n        that:\n"
                                       "          - jump is failed and jump.jumped is none\n"
                                       "          - \"'whether it jumped is unknown' in jump.msg\"\n"
                                       "          - jump.boot_id_before is not defined and jump.unloaded is not defined\n"
                                       "          - jump.load.triggered is none\n", check=False)
    assert proc.returncode == 0, proc.stdout[-4000:]
    after = facts(guests, tmp_path)[name]
    assert after["boot_id"] != before["boot_id"] and after["in"]["present"], after  # it had jumped: left as it is


def test_kho_off_is_refused_then_enabled_through_grub_and_handed_over(lab_factory, tmp_path):
    guests = lab_factory(1, "--boot", "grub")  # a real GRUB boots the guest, with KHO off
    name = guests["guests"][0]["name"]
    for d in ("dry", "refused", "enabled"):
        (tmp_path / d).mkdir()
    # #39: a dry run names every refusal, not only the first: KHO off on this boot, and a kernel that is not there.
    dry, summary = handover(guests, tmp_path / "dry", cli=("--check",), kho_handover_kernel="/boot/vmlinuz-7.3.5")
    verdict = summary[name]["verdict"]
    assert dry.returncode != 0 and verdict.startswith("would refuse: "), summary
    assert "KHO is built in but not enabled on this boot" in verdict and "/boot/vmlinuz-7.3.5" in verdict, verdict
    assert (summary[name]["release_before"], summary[name]["boot_id_after"]) == ("7.3.4", None), summary[name]
    print("the dry run:", verdict)
    refused, summary = handover(guests, tmp_path / "refused")
    assert refused.returncode != 0
    assert "add kho=on to the kernel command line" in refused.stdout and "kho_handover_reboot_ok" in refused.stdout
    assert summary[name]["verdict"] == "refused, nothing changed", summary
    proc, summary = handover(guests, tmp_path / "enabled", kho_handover_reboot_ok=True)
    assert proc.returncode == 0, proc.stdout[-4000:]
    result = summary[name]
    assert result["verdict"] == "verified" and result["kexec_count"] == 1, result
    after = facts(guests, tmp_path)[name]
    assert after["params"]["kho_enabled"] is True and after["in"]["present"], after
    assert after["boot_id"] != result["boot_id_before"]
    guest_run(guests, tmp_path, "    - ansible.builtin.slurp: {src: /boot/grub/grub.cfg}\n      register: cfg\n"
                                "    - ansible.builtin.assert:\n"
                                "        that: \"'kho=on' in (cfg.content | b64decode)\"\n")


def test_regions_allowed_to_go_are_named_in_the_verdict_never_verified(lab_factory, tmp_path):
    """The target line without reserve_mem=, the region allowed to go: handed over, and the new kernel's own
    record (no revival line, no memblock in its out/ tree) makes the verdict name it as dropped."""
    guests = lab_factory()
    name = guests["guests"][0]["name"]
    proc, summary = handover(guests, tmp_path, kho_handover_cmdline=NO_REGIONS_CMDLINE,
                             kho_handover_drop_regions=["oops"])
    assert proc.returncode == 0, proc.stdout[-4000:]
    r = summary[name]
    assert r["verdict"] == "handed over, regions dropped: oops", r
    oops = next(g for g in r["regions"] if g["name"] == "oops")
    assert oops["revived"] is False and oops["start_after"] == oops["start_before"], r["regions"]  # sent, not kept
    assert oops["ramoops"] is False, r["regions"]  # ramoops was on it before, not after
    after = facts(guests, tmp_path)[name]
    assert not any("Revived memory reservation 'oops'" in line for line in after["log"]), after["log"]
    assert "memblock" not in after["out"]["sub_blobs"] and after["in"]["reserve_mem"], after["out"]
    print("the new kernel's own evidence:", [line for line in after["log"] if "KHO" in line or "ramoops" in line],
          "out/sub_fdts:", sorted(after["out"]["sub_blobs"]), "reserve_mem_param:", after["reserve_mem_param"])

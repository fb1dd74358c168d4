"""The way back (#36), driven by the controller, on a real guest: a new kernel that fails its test_command hands the
host back to the old one by a second KHO handover, and the old kernel's own word says it came home.

7.3.4 -> 7.2.13 (a downgrade the fleet's health check rejects) -> 7.3.4 again: the region revived twice, the canary
written again before the return found in the old kernel's pstore, kexec-metadata `7.2.13 (count 2)`.  Without the
old kernel's image on disk no return is promised, and the verdict stays `failed after the jump`.  Rows are written to
build-lab/logs/release-matrix.json with both kernels' own log lines (the serial console keeps every boot's).
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from test_faults import guest_run
from test_releases import copy_kernels, record, releases  # noqa: F401  pylint: disable=unused-import
from test_role import KERNEL, facts, handover

pytestmark = pytest.mark.lab_full  # make test-lab

FAILS_ON_NEW = 'test "$(cat /proc/sys/kernel/osrelease)" != 7.2.13'  # the health check the new release fails
EXEC_FROM = "KHO: exec from:"


def serial_lines(guests, words: str) -> list:
    serial = Path(guests["guests"][0]["serial"]).read_bytes().decode("utf-8", "replace")
    return [line.strip() for line in serial.splitlines() if words in line]


def record_return(guests, pair: str, verdict: str, way: dict, came_from: tuple) -> None:
    """Both kernels' own `KHO: exec from:` lines (the new kernel's, then the old one's again: ``came_from``), and a
    row of the release matrix."""
    both = serial_lines(guests, EXEC_FROM)[-2:]
    assert came_from[0] in both[0] and came_from[1] in both[1], both
    record({"pair": pair, "verdict": verdict, "kept": way["return"]["taken"]["kept"] + ["pstore canary"],
            "refused": None, "evidence": {"both kernels' log": both,
                                          "revived": serial_lines(guests, "Revived memory reservation")[-2:],
                                          "decision": way["decision"]}})


def to_72(guests, tmp_path):
    return handover(guests, tmp_path, kho_handover_kernel="/boot/vmlinuz-7.2.13", kho_handover_canary=True,
                    kho_handover_test_command=FAILS_ON_NEW)


def test_a_new_kernel_that_fails_its_test_is_handed_back_to_the_old_one(
        lab_factory, tmp_path, releases):  # noqa: F811
    guests = lab_factory(1)
    name = guests["guests"][0]["name"]
    copy_kernels(guests, tmp_path, {"/boot/vmlinuz-7.2.13": releases["7.2.13"]})

    # No image of the running 7.3.4 under its release's name: no return is promised, and none is made.
    proc, summary = to_72(guests, tmp_path)
    stayed = summary[name]
    assert proc.returncode != 0 and stayed["verdict"] == "failed after the jump", stayed
    assert stayed["way_back"]["returned"] is False and "no way back was recorded" in stayed["way_back"]["decision"]
    # the lab guest has /vmlinuz (a link to the lab's image), which names the newest kernel, not the running one
    assert "not necessarily the running 7.3.4: no image of it to return to" in stayed["way_back"]["decision"], stayed
    assert next(iter(facts(guests, tmp_path).values()))["release"] == "7.2.13"
    proc, summary = handover(guests, tmp_path, kho_handover_kernel=KERNEL)  # home by hand, the lab's image
    assert proc.returncode == 0 and summary[name]["verdict"] == "verified", proc.stdout[-4000:]

    # The old kernel on disk as a distribution lays it down (/boot/vmlinuz-RELEASE): the way back exists.
    guest_run(guests, tmp_path, f"    - ansible.builtin.copy: {{src: {KERNEL}, dest: /boot/vmlinuz-7.3.4, "
                                "remote_src: true, mode: '0644'}\n")
    count = summary[name]["kexec_count"]
    proc, summary = to_72(guests, tmp_path)
    result = summary[name]
    assert proc.returncode != 0, "a returned host is still a failed run"
    assert result["verdict"] == "returned to 7.3.4: the new kernel 7.2.13 failed at test_command", result
    way = result["way_back"]
    assert way["returned"] is True and way["failed_check"] == "test_command" and way["return"]["failures"] == [], way
    assert "oops" in way["return"]["taken"]["kept"], way["return"]["taken"]
    home = next(iter(facts(guests, tmp_path).values()))
    meta = home["in"]["kexec_metadata"]
    assert (home["release"], meta["previous_release"], meta["kexec_count"]) == ("7.3.4", "7.2.13", count + 2), meta
    # the summary says where the host is now: home, on the boot the return came back on
    assert (result["release_after"], result["boot_id_after"]) == ("7.3.4", home["boot_id"]) == \
        ("7.3.4", way["back"]["boot_id_after"]), result
    assert home["boot_id"] != result["boot_id_before"] and way["failed_release"] == "7.2.13"
    assert home["kexec_loaded"] is False
    record_return(guests, "7.3.4 -> 7.2.13 -> 7.3.4 (test_command failed on 7.2.13: the way back)", result["verdict"],
                  way, ("7.3.4", "7.2.13"))  # the new kernel's line (from 7.3.4), then the old one's again


FAILS_ON_734 = 'test "$(cat /proc/sys/kernel/osrelease)" != 7.3.4'  # the upgrade's health check fails on 7.3.4
RETURN_TASK = """\
    - kexec.kho.kho_kexec:
        state: executed
        kernel: /boot/vmlinuz-7.3.4
        pmsg: kho-upgrade-canary
        test_command: '{test}'
        facts_after: true
        kexec_timeout: 600
        return: on_failure
      register: jump
      ignore_errors: true  # a returned host is a failed run: its fields say where it is
    - ansible.builtin.copy: {{content: '{{{{ jump | to_json }}}}', dest: '{out}', mode: '0644'}}
      delegate_to: localhost
"""


def test_a_bad_upgrade_is_returned_by_kho_kexec_itself_without_the_role(lab_factory, tmp_path, releases):  # noqa: F811
    """kho_kexec return=on_failure, in a playbook of its own: 7.2.13 upgraded to 7.3.4, whose health check fails, is
    handed back to 7.2.13; 7.2.13's own facts and both kernels' log lines say it came home."""
    guests = lab_factory(1)
    name = guests["guests"][0]["name"]
    copy_kernels(guests, tmp_path, {"/boot/vmlinuz-7.2.13": releases["7.2.13"]})
    guest_run(guests, tmp_path, f"    - ansible.builtin.copy: {{src: {KERNEL}, dest: /boot/vmlinuz-7.3.4, "
                                "remote_src: true, mode: '0644'}\n")
    proc, summary = handover(guests, tmp_path, kho_handover_kernel="/boot/vmlinuz-7.2.13")
    assert proc.returncode == 0 and summary[name]["verdict"] == "verified", proc.stdout[-4000:]
    on_72 = next(iter(facts(guests, tmp_path).values()))
    count = on_72["in"]["kexec_metadata"]["kexec_count"]

    out = tmp_path / "jump.json"
    guest_run(guests, tmp_path, RETURN_TASK.format(test=FAILS_ON_734, out=out))
    res = json.loads(out.read_text())
    assert res["failed"] and res["jumped"] is True and res["failed_check"] == "test_command", res
    back = res["return"]
    assert back["verdict"] == "returned to 7.2.13: the new kernel 7.3.4 failed at test_command", back
    assert res["returned"] is True and back["return"]["failures"] == [] and "oops" in back["return"]["taken"]["kept"]
    home = res["ansible_facts"]["kho"]  # facts_after: the host as it is now
    meta = home["in"]["kexec_metadata"]
    assert (home["release"], meta["previous_release"], meta["kexec_count"]) == ("7.2.13", "7.3.4", count + 2), meta
    assert home["boot_id"] == back["back"]["boot_id_after"]
    assert home["boot_id"] not in (res["boot_id_before"], res["boot_id_after"])
    now = next(iter(facts(guests, tmp_path).values()))
    assert (now["release"], now["boot_id"], now["kexec_loaded"]) == ("7.2.13", home["boot_id"], False), now
    record_return(guests, "7.2.13 -> 7.3.4 -> 7.2.13 (an upgrade whose health check failed: kho_kexec return=on_failure)",
                  back["verdict"], back, ("7.2.13", "7.3.4"))  # 7.3.4's line (from 7.2.13), then 7.2.13's again


HEALTH_UNIT = """\
    - ansible.builtin.copy:
        dest: /etc/systemd/system/kho-lab-health.service
        mode: '0644'
        content: |
          [Unit]
          Description=A service that fails on 7.2.13 (the lab's health gate fault)
          [Service]
          Type=oneshot
          RemainAfterExit=true
          ExecStart=/bin/sh -c 'test "$(uname -r)" != 7.2.13'
          [Install]
          WantedBy=multi-user.target
    - ansible.builtin.systemd_service: {name: kho-lab-health.service, enabled: true, daemon_reload: true}
"""


def test_a_failed_health_gate_is_a_failed_check_and_the_host_goes_home(lab_factory, tmp_path, releases):  # noqa: F811
    """The role's health gate: a service that fails on the new kernel leaves systemd degraded; with only `running`
    accepted, the gate fails, and the way back takes the host home to 7.3.4 as for any other check."""
    guests = lab_factory(1)
    name = guests["guests"][0]["name"]
    copy_kernels(guests, tmp_path, {"/boot/vmlinuz-7.2.13": releases["7.2.13"]})
    guest_run(guests, tmp_path, f"    - ansible.builtin.copy: {{src: {KERNEL}, dest: /boot/vmlinuz-7.3.4, "
                                "remote_src: true, mode: '0644'}\n" + HEALTH_UNIT)
    proc, summary = handover(guests, tmp_path, kho_handover_kernel="/boot/vmlinuz-7.2.13", kho_handover_canary=True,
                             kho_handover_health_gate=True, kho_handover_health_timeout=120,
                             kho_handover_health_states=["running"])
    result = summary[name]
    assert proc.returncode != 0 and result["failed_step"] == "health", result
    assert result["verdict"] == "returned to 7.3.4: the new kernel 7.2.13 failed at health gate", result
    assert result["way_back"]["failed_check"] == "health gate" and result["way_back"]["return"]["failures"] == []
    assert result["release_after"] == "7.3.4", result
    home = next(iter(facts(guests, tmp_path).values()))
    assert (home["release"], home["in"]["kexec_metadata"]["previous_release"]) == ("7.3.4", "7.2.13"), home

"""Kernel updates for real (#35): handovers between releases, into a packaged, modular kernel with its initramfs, and
to targets whose formats moved on.

Every pair carries the lab's reserve_mem region, a pstore canary and the kernel's own LUO selftest sessions
(luo_kexec_simple: stage 1 before the jump, stage 2 in the new boot decides).  Each row of the matrix is written to
build-lab/logs/release-matrix.json with the evidence that decided it: the new kernel's own log lines.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest
from test_faults import assert_untouched, guest_run
from test_luo import LAB, PASSED, SID_TIMEOUT, cache_service, selftests, sid_guest, stage  # noqa: F401  pylint: disable=unused-import
from test_role import KERNEL, handover
from test_targets import COLLECTION, run_playbook

pytestmark = pytest.mark.lab_full  # make test-lab

MATRIX = COLLECTION.parents[2] / "logs" / "release-matrix.json"
SIMPLE = ("luo_kexec_simple",)
KERNEL_WORDS = re.compile(r"KHO|reserve_mem|memory reservation|liveupdate|luo|ramoops")


def _lab_json(*args: str) -> dict:
    proc = subprocess.run([sys.executable, str(LAB), *args], capture_output=True, text=True, check=False)
    if proc.returncode:
        pytest.fail(f"lab.py {' '.join(args)} failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


@pytest.fixture(scope="module")
def releases(lab_reason):
    """The lab's recipe on the other releases' sources: {release: bzImage}."""
    return {info["release"]: info["bzImage"] for info in (_lab_json("release", r) for r in ("7.2.13", "7.3-rc7"))}


def record(row: dict) -> None:
    MATRIX.parent.mkdir(parents=True, exist_ok=True)
    rows = json.loads(MATRIX.read_text()) if MATRIX.exists() else []
    MATRIX.write_text(json.dumps([*rows, row], indent=1) + "\n")


def copy_kernels(guests, tmp_path, kernels: dict) -> None:
    guest_run(guests, tmp_path, "".join(f"    - ansible.builtin.copy: {{src: '{src}', dest: '{dest}', mode: '0644'}}\n"
                                        for dest, src in kernels.items()))


def evidence(guests, tmp_path, result: dict) -> dict:
    """What decided: the verdict's evidence per region, and the new kernel's own log lines (dmesg on the guest)."""
    out = tmp_path / "dmesg.txt"
    guest_run({**guests, "guests": guests["guests"][:1]}, tmp_path,
              "    - ansible.builtin.command: {argv: [dmesg]}\n      register: d\n      changed_when: false\n"
              f"    - ansible.builtin.copy: {{content: '{{{{ d.stdout }}}}', dest: '{out}', mode: '0644'}}\n"
              "      delegate_to: localhost\n      run_once: true\n")
    lines = [line for line in out.read_text().splitlines() if KERNEL_WORDS.search(line)]
    return {"regions": {r["name"]: r.get("evidence") for r in result.get("regions") or []},
            "liveupdate": {k: (result.get("liveupdate") or {}).get(k) for k in ("incoming_number", "expected_number")},
            "new kernel's log": lines[-8:]}


def save_facts(guests, tmp_path, release: str) -> None:
    """The running release's facts with every blob (its outgoing tree, its log): recorded for fixtures."""
    dest = MATRIX.parent / "releases" / f"{release}.json"
    dest.parent.mkdir(parents=True, exist_ok=True)
    playbook = tmp_path / "record.yml"
    playbook.write_text("- hosts: kho_lab\n  gather_facts: false\n  tasks:\n"
                        "    - kexec.kho.kho_facts: {include_raw: true}\n"
                        "    - ansible.builtin.copy:\n        content: '{{ ansible_facts.kho | to_json }}'\n"
                        f"        dest: '{dest}'\n        mode: '0644'\n      delegate_to: localhost\n")
    run_playbook(playbook, guests["inventory"], tmp_path)


def assert_kept(result: dict, source: str, target: str, count: int) -> None:
    assert result["verdict"] == "verified", result
    assert (result["release_before"], result["release_after"], result["kexec_count"]) == (source, target, count), result
    oops = next(r for r in result["regions"] if r["name"] == "oops")
    assert oops["revived"] is True, result["regions"]
    lu = result["liveupdate"]
    assert lu["lost"] == [] and "kexec_simple_state" in lu["sessions_before"], lu


def test_a_chain_through_three_releases_keeps_everything(lab_factory, tmp_path, releases, selftests):  # noqa: F811
    """7.3.4 -> 7.2.13 (downgrade) -> 7.3.4 (upgrade) -> 7.3.0-rc7 -> 7.3.4 (from a release candidate), one guest."""
    guests = lab_factory(1, "--append", "liveupdate=on")
    name = guests["guests"][0]["name"]
    copy_kernels(guests, tmp_path, {f"/boot/vmlinuz-{rel}": path for rel, path in releases.items()})
    chain = [("7.3.4", "7.2.13"), ("7.2.13", "7.3.4"), ("7.3.4", "7.3.0-rc7"), ("7.3.0-rc7", "7.3.4")]
    for count, (source, target) in enumerate(chain, 1):
        assert "You may now perform kexec reboot" in stage(guests, tmp_path, selftests, 1, SIMPLE)
        save_facts(guests, tmp_path, source)
        kernel = KERNEL if target == "7.3.4" else f"/boot/vmlinuz-{target}"
        proc, summary = handover(guests, tmp_path, kho_handover_kernel=kernel, kho_handover_canary=True)
        result = summary[name]
        assert proc.returncode == 0, proc.stdout[-6000:]
        assert_kept(result, source, target, count)
        second = stage(guests, tmp_path, selftests, 2, SIMPLE)
        assert PASSED["luo_kexec_simple"] in second, second[-3000:]
        record({"pair": f"{source} -> {target}", "verdict": result["verdict"], "kept": ["oops", "pstore canary",
                "kexec_simple_state", "test-session"], "refused": None, "stage 2": PASSED["luo_kexec_simple"],
                "evidence": evidence(guests, tmp_path, result)})


def test_a_services_fd_store_crosses_releases_both_ways_on_the_sid_guest(lab_factory, tmp_path, releases):
    """systemd 262 (the sid guest): kho-cache.service's memfd in its preserved fd store, 7.3.4 -> 7.2.13 (downgrade)
    -> 7.3.4 (upgrade); the service itself finds its data again on each new kernel (its own word, not ours)."""
    guests = sid_guest(lab_factory)
    name = guests["guests"][0]["name"]
    copy_kernels(guests, tmp_path, {"/boot/vmlinuz-7.2.13": releases["7.2.13"]})
    first = cache_service(guests, tmp_path)
    assert first["state"].startswith("created on boot ") and first["count"] == "0", first
    data = first["state"].split(": ", 1)[1]
    for count, (source, target, kernel) in enumerate([("7.3.4", "7.2.13", "/boot/vmlinuz-7.2.13"),
                                                      ("7.2.13", "7.3.4", KERNEL)], 1):
        proc, summary = handover(guests, tmp_path, kho_handover_kernel=kernel, **SID_TIMEOUT)
        result = summary[name]
        assert proc.returncode == 0, proc.stdout[-6000:]
        assert result["verdict"] == "verified" and result["method"] == "systemctl", result
        assert (result["release_before"], result["release_after"], result["kexec_count"]) == (source, target, count)
        lu = result["liveupdate"]
        assert "kho-cache.service" in lu["units_before"] and lu["lost"] == [], lu
        after = cache_service(guests, tmp_path)
        assert after["state"].startswith("restored on boot ") and after["state"].endswith(": " + data), after
        assert after["count"] == str(count), after
        revived = [r["name"] for r in result.get("regions") or [] if r.get("revived") is True]
        assert all(r.get("revived") is True for r in result.get("regions") or []), result["regions"]
        record({"pair": f"{source} -> {target} (sid guest, systemd 262: kho-cache.service's fd store)",
                "verdict": result["verdict"], "kept": [*revived, "kho-cache.service's fd store"], "refused": None,
                "service": after["state"], "evidence": evidence(guests, tmp_path, result)})


@pytest.fixture(scope="module")
def package(lab_reason):
    return _lab_json("release", "7.2.13", "--packaged")


def test_a_packaged_modular_kernel_with_its_initramfs(lab_factory, tmp_path, package):
    """dpkg -i of a kernel package, the guest's initramfs-tools makes the initrd: the handover finds it, uses it,
    and the new kernel mounts its root with the modules from it; without the initrd the target is refused."""
    guests = lab_factory(1, "--flavour", "packaged")
    name = guests["guests"][0]["name"]
    rel = package["release"]
    deb = Path(package["deb"])
    guest_run(guests, tmp_path, f"    - ansible.builtin.copy: {{src: '{deb}', dest: /tmp/{deb.name}, mode: '0644'}}\n"
                                f"    - ansible.builtin.command: {{argv: [dpkg, -i, /tmp/{deb.name}]}}\n"
                                "      changed_when: true\n"
                                f"    - ansible.builtin.stat: {{path: /boot/initrd.img-{rel}}}\n      register: initrd\n"
                                "    - ansible.builtin.assert: {that: initrd.stat.exists}\n"
                                f"    - ansible.builtin.command: {{argv: [mv, /boot/initrd.img-{rel}, /root/aside]}}\n"
                                "      changed_when: true\n")
    proc, summary = handover(guests, tmp_path, kho_handover_kernel=f"/boot/vmlinuz-{rel}")
    refused = summary[name]
    assert proc.returncode != 0 and refused["verdict"] != "verified", refused
    assert f"/boot/initrd.img-{rel}" in refused["error"] and "initrd: none" in refused["error"], refused
    assert_untouched(guests, tmp_path)
    guest_run(guests, tmp_path, f"    - ansible.builtin.command: {{argv: [mv, /root/aside, /boot/initrd.img-{rel}]}}\n"
                                "      changed_when: true\n")
    proc, summary = handover(guests, tmp_path, kho_handover_kernel=f"/boot/vmlinuz-{rel}", kho_handover_canary=True)
    result = summary[name]
    assert proc.returncode == 0, proc.stdout[-6000:]
    assert result["verdict"] == "verified" and result["release_after"] == rel, result
    modules = guest_run(guests, tmp_path, "    - ansible.builtin.slurp: {src: /proc/modules}\n      register: m\n"
                                          "    - ansible.builtin.debug: {msg: \"{{ m.content | b64decode }}\"}\n").stdout
    # The root's disk and file system drivers are modules of the new kernel: the root came up from the initramfs the
    # handover found and loaded (without it the new kernel cannot mount the root: the refusal above)
    assert "virtio_blk" in modules and "ext4" in modules, modules[-2000:]
    record({"pair": f"7.3.4 -> {rel} (packaged: dpkg -i, its initramfs-tools initrd)", "verdict": result["verdict"],
            "kept": ["oops", "pstore canary"], "refused": f"without /boot/initrd.img-{rel}: {refused['error'][:200]}",
            "evidence": evidence(guests, tmp_path, result)})
    proc, summary = handover(guests, tmp_path, kho_handover_kernel=KERNEL, kho_handover_canary=True)
    assert proc.returncode == 0 and summary[name]["verdict"] == "verified", proc.stdout[-6000:]
    assert (summary[name]["release_before"], summary[name]["release_after"]) == (rel, "7.3.4"), summary[name]
    record({"pair": f"{rel} -> 7.3.4 (upgrade from the packaged kernel)", "verdict": "verified",
            "kept": ["oops", "pstore canary"], "refused": None, "evidence": evidence(guests, tmp_path, summary[name])})


# ---------------------------------------------------------------- targets whose formats moved on

FORMATS = {"luo-v6": "luo-v5", "memfd-v3": "memfd-v2", "kho-v5": "kho-v4", "reserve-mem-v2": "reserve-mem-v1"}


@pytest.fixture(scope="module")
def formats(lab_reason):
    return {fmt: _lab_json("format", fmt)["bzImage"] for fmt in FORMATS}


def test_a_target_whose_formats_moved_on_is_refused_naming_both_sides(lab_factory, tmp_path, formats,
                                                                      selftests):  # noqa: F811
    """Sessions held: each format variant refused before any change, `sends X, target accepts Y`.  Forced once:
    the KHO root the target does not accept makes it skip the whole handover (the region is lost), and a LUO state
    it cannot parse makes it panic (luo_restore_fail): the refusal is shown to matter."""
    guests = lab_factory(2, "--append", "liveupdate=on", "--no-reboot")
    skipper, panicker = (g["name"] for g in guests["guests"])
    copy_kernels(guests, tmp_path, {f"/boot/vmlinuz-{fmt}": path for fmt, path in formats.items()})
    stage(guests, tmp_path, selftests, 1, SIMPLE)
    for fmt, sent in FORMATS.items():
        proc, summary = handover(guests, tmp_path, kho_targets=skipper, kho_handover_kernel=f"/boot/vmlinuz-{fmt}")
        refused = summary[skipper]
        assert proc.returncode != 0 and refused["verdict"] != "verified", refused
        assert f"sends {sent}, target accepts {fmt}" in refused["error"], refused["error"]
        record({"pair": f"7.3.4 -> 7.3.4+{fmt}", "verdict": refused["verdict"], "kept": None,
                "refused": refused["error"][:300], "evidence": ["refused before any change"]})
    assert_untouched(guests, tmp_path)
    proc, summary = handover(guests, tmp_path, kho_targets=skipper, kho_handover_kernel="/boot/vmlinuz-kho-v5",
                             kho_handover_target_check="report")
    forced = summary[skipper]
    assert forced["verdict"] == "failed after the jump", forced  # the new kernel took up nothing: no region
    assert "received no handover data" in forced["error"] and not any(r.get("revived") for r in forced["regions"])
    serial = Path(guests["guests"][0]["serial"]).read_bytes().decode("utf-8", "replace")
    skipped = [line for line in serial.splitlines() if "KHO" in line or "kho" in line][-5:]
    record({"pair": "7.3.4 -> 7.3.4+kho-v5, forced (target_check: report)", "verdict": forced["verdict"],
            "kept": None, "refused": None, "evidence": skipped})
    proc, summary = handover(guests, tmp_path, kho_targets=panicker, kho_handover_kernel="/boot/vmlinuz-luo-v6",
                             kho_handover_target_check="report", kho_handover_kexec_timeout=90)
    assert summary[panicker]["verdict"] != "verified", summary[panicker]
    serial = Path(guests["guests"][1]["serial"]).read_bytes().decode("utf-8", "replace")
    assert "LUO state is incompatible" in serial or "Kernel panic" in serial, serial[-3000:]
    record({"pair": "7.3.4 -> 7.3.4+luo-v6, forced (target_check: report)", "verdict": summary[panicker]["verdict"],
            "kept": None, "refused": None,
            "evidence": [line for line in serial.splitlines() if "LUO" in line or "panic" in line][-5:]})

"""The handover role on real lab guests: a rolling run, and each way it can go wrong."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest
from test_targets import COLLECTION, run_playbook

PLAYBOOK = COLLECTION / "playbooks" / "handover.yml"
KERNEL = "/boot/vmlinuz-kho"
# Keeps the lab's regions (a line that dropped them would be refused in preflight), then panics: no root.
BAD_CMDLINE = ("root=/dev/nonexistent console=ttyS0 8250.nr_uarts=1 panic=-1 kho=on reserve_mem=1M:4096:oops "
               "ramoops.mem_name=oops ramoops.pmsg_size=65536")


def installed_under_oldest_core(tmp_path: Path) -> dict:
    """The collection built and installed with the oldest supported ansible-core (KHO_OLDEST_VENV), as a user of
    AAP 2.5 would: handover()'s keyword arguments that run its role with that core."""
    venv = os.environ.get("KHO_OLDEST_VENV")
    if not venv:
        pytest.skip("KHO_OLDEST_VENV is not set (make lab-lean sets it where the machine has Python 3.10)")
    bin_dir = Path(venv) / "bin"
    # Only the installed copy on the collections path (the test layout's would make the install a no-op).
    env = dict(os.environ, PATH=f"{bin_dir}:{os.environ['PATH']}", ANSIBLE_COLLECTIONS_PATH=str(tmp_path / "collections"))
    version = subprocess.run([str(bin_dir / "ansible"), "--version"], capture_output=True, text=True, check=True,
                             env=env).stdout.split("\n", 1)[0]
    assert "core 2.16." in version, version

    def galaxy(*args):
        proc = subprocess.run([str(bin_dir / "ansible-galaxy"), "collection", *args], capture_output=True, text=True,
                              check=False, env=env)
        assert proc.returncode == 0, proc.stdout + proc.stderr
    galaxy("build", "--output-path", str(tmp_path), str(COLLECTION))
    galaxy("install", "-p", str(tmp_path / "collections"), *map(str, tmp_path.glob("kexec-kho-*.tar.gz")))
    installed = tmp_path / "collections" / "ansible_collections" / "kexec" / "kho"
    return {"playbook": installed / "playbooks" / "handover.yml",
            "env": {"PATH": env["PATH"], "ANSIBLE_COLLECTIONS_PATH": env["ANSIBLE_COLLECTIONS_PATH"]}}


def handover(guests: dict, tmp_path: Path, host_vars: dict | None = None, cli: tuple = (),
             playbook: Path = PLAYBOOK, env: dict | None = None, **extra) -> tuple:
    inventories = [guests["inventory"]]
    if host_vars:
        extra_inv = tmp_path / "hostvars.json"
        extra_inv.write_text(json.dumps({"kho_lab": {"hosts": host_vars}}))
        inventories.append(str(extra_inv))
    summary = tmp_path / "summary.json"
    args = tuple(x for inv in inventories[1:] for x in ("-i", inv)) + cli
    proc = run_playbook(playbook, inventories[0], tmp_path, check=False, args=args,
                        extra={"kho_handover_kernel": KERNEL, "kho_targets": "all", **extra},
                        env={"ANSIBLE_CALLBACKS_ENABLED": "kexec.kho.kho_report", "KHO_REPORT_JSON": str(summary),
                             "KHO_REPORT_HTML": str(tmp_path / "report.html"), "ANSIBLE_SHOW_CUSTOM_STATS": "1",
                             **(env or {})})
    return proc, json.loads(summary.read_text()) if summary.exists() else {}


def facts(guests: dict, tmp_path: Path) -> dict:
    playbook = tmp_path / "facts.yml"
    playbook.write_text("- hosts: kho_lab\n  gather_facts: false\n  tasks:\n"
                        "    - kexec.kho.kho_facts:\n"
                        "    - ansible.builtin.copy:\n        content: '{{ ansible_facts.kho | to_json }}'\n"
                        "        dest: '{{ kho_tmp }}/{{ inventory_hostname }}.json'\n        mode: '0644'\n"
                        "      delegate_to: localhost\n")
    run_playbook(playbook, guests["inventory"], tmp_path)
    return {g["name"]: json.loads((tmp_path / f"{g['name']}.json").read_text()) for g in guests["guests"]}


def test_failed_load_rolls_back_under_the_oldest_core(lab_factory, tmp_path):
    """Also the oldest ansible-core's role run (2.16, AAP 2.5): installed from its tarball, preflight to rescue."""
    oldest = installed_under_oldest_core(tmp_path)
    guests = lab_factory()
    name = guests["guests"][0]["name"]
    prep = tmp_path / "prep.yml"
    prep.write_text("- hosts: kho_lab\n  gather_facts: false\n  tasks:\n"
                    "    - ansible.builtin.command:\n        argv: [dd, 'if=/boot/vmlinuz-kho', of=/tmp/truncated, bs=4096, count=1]\n"
                    "      changed_when: true\n")
    run_playbook(prep, guests["inventory"], tmp_path)
    proc, summary = handover(guests, tmp_path, kho_handover_kernel="/tmp/truncated", **oldest)
    assert proc.returncode != 0
    assert "KHO handover failed in phase jump at 'Load, jump and wait for the new kernel'" in proc.stdout
    assert summary[name]["failed_step"] == "jump"
    assert "kexec -s -l /tmp/truncated failed" in proc.stdout
    assert summary[name]["verdict"] == "refused, nothing changed"  # the image was refused: nothing loaded
    after = facts(guests, tmp_path)[name]
    assert after["kexec_loaded"] is False and after["in"]["present"] is False
    assert after["boot_id"] == summary[name]["boot_id_before"]
    stats = proc.stdout.split("CUSTOM STATS", 1)[-1]  # set_stats under 2.16 too
    assert f'"{name}": {{' in stats and "refused, nothing changed" in stats, stats[-3000:]


def test_host_that_never_returns_fails_alone(lab_factory, tmp_path):
    """Also the lean tier's verified handover: the good host's data (a pstore canary) survives."""
    guests = lab_factory(2, "--no-reboot")  # a panic stops QEMU: the host never comes back
    bad, good = (g["name"] for g in guests["guests"])
    # The short timeout is the bad host's alone: two emulated guests jumping at once on two cores can
    # take the good one past 60 s (its first jump also waits for the kho_test restore).
    proc, summary = handover(guests, tmp_path, host_vars={bad: {"kho_handover_cmdline": BAD_CMDLINE,
                                                                "kho_handover_kexec_timeout": 60}},
                             kho_serial=2, kho_max_fail_percentage=100, kho_handover_canary=True)
    assert proc.returncode != 0
    assert summary[bad]["verdict"] == "failed after the jump"
    assert "did not answer on a new boot id within 60 s" in summary[bad]["error"]
    ok = summary[good]
    assert ok["verdict"] == "verified", ok  # verify greps the canary out of pstore, or fails
    assert ok["kexec_count"] == 1 and ok["boot_id_after"] != ok["boot_id_before"], ok
    oops = [r for r in ok["regions"] if r["name"] == "oops"]
    assert oops and oops[0]["start_before"] == oops[0]["start_after"], ok["regions"]
    stats = proc.stdout.split("CUSTOM STATS", 1)[-1]  # set_stats: what AWX/Controller keeps as artifacts
    assert f'"{good}": {{' in stats and f'"{bad}": {{' in stats, stats[-3000:]
    assert "verified" in stats and "failed after the jump" in stats, stats[-3000:]


def test_panic_and_cold_boot_is_not_a_success(lab_factory, tmp_path):
    guests = lab_factory()  # panic=-1 and QEMU's reset: the guest cold-boots, without handover data
    name = guests["guests"][0]["name"]
    proc, summary = handover(guests, tmp_path, kho_handover_cmdline=BAD_CMDLINE, kho_handover_kexec_timeout=180)
    assert proc.returncode != 0
    assert summary[name]["verdict"] == "failed after the jump"
    assert "received no handover data" in summary[name]["error"]
    assert summary[name]["boot_id_after"] is None or summary[name]["boot_id_after"] != summary[name]["boot_id_before"]


NO_REGIONS_CMDLINE = "root=/dev/vda rw console=ttyS0 8250.nr_uarts=1 net.ifnames=0 panic=-1 kho=on"


def without_pyfdt(tmp_path: Path) -> dict:
    """An environment whose controller Python cannot import pyfdt (the hosts' Python is not touched)."""
    shadow = tmp_path / "no-pyfdt" / "pyfdt"
    shadow.mkdir(parents=True)
    (shadow / "__init__.py").write_text("raise ImportError('pyfdt blocked on this controller by the test')\n")
    return {"PYTHONPATH": str(shadow.parent)}


def test_runs_that_must_not_start_change_nothing(lab_factory, tmp_path):
    """Refused before any change: a controller without pyfdt, then a target line that would drop the regions."""
    guests = lab_factory()
    name = guests["guests"][0]["name"]
    before = facts(guests, tmp_path)[name]
    proc, summary = handover(guests, tmp_path, env=without_pyfdt(tmp_path))
    assert proc.returncode != 0
    assert "this controller cannot decode or verify a handover: it lacks the Python library pyfdt" in proc.stdout
    assert summary[name]["verdict"] == "refused, nothing changed", summary
    assert "this run undid: nothing left to undo" in proc.stdout, proc.stdout[-3000:]

    proc, summary = handover(guests, tmp_path, kho_handover_cmdline=NO_REGIONS_CMDLINE)
    assert proc.returncode != 0
    assert "the new kernel would not take up every region handed over: the target command line has no reserve_mem= for 'oops'" in proc.stdout
    assert "drop_regions" in proc.stdout and summary[name]["verdict"] == "refused, nothing changed", summary
    assert "this run undid: its handover lock released" in proc.stdout, proc.stdout[-3000:]
    after = facts(guests, tmp_path)[name]
    assert after["boot_id"] == before["boot_id"] and after["kexec_loaded"] is False and after["in"]["present"] is False

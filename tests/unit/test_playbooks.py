"""The handover and enable playbooks: no default targets, a pattern that matches nothing fails naming it, and enable
checks the kernel before it writes anything, one batch at a time.  ansible-playbook on a local inventory; no guest."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

COLLECTION = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent
PLAYBOOKS = ("handover", "enable")
# web-1 is never reached: the guards run on the controller, and the enable tests run in check mode on a local
# connection, reading this machine without changing it.
INVENTORY = "localhost ansible_connection=local\n[kho]\nweb-1 ansible_host=192.0.2.1\nweb-2 ansible_host=192.0.2.2\n"


def run(tmp_path: Path, playbook: str, *args: str, inventory: str = INVENTORY) -> subprocess.CompletedProcess:
    (tmp_path / "inventory.ini").write_text(inventory)
    env = {**{k: v for k, v in os.environ.items() if not k.startswith("ANSIBLE_")},
           "ANSIBLE_COLLECTIONS_PATH": str(COLLECTION.parents[2]), "ANSIBLE_NOCOLOR": "1", "ANSIBLE_FORCE_COLOR": "0",
           "ANSIBLE_LOCAL_TEMP": str(tmp_path / "local"), "ANSIBLE_REMOTE_TEMP": str(tmp_path / "remote"),
           "ANSIBLE_HOST_KEY_CHECKING": "False", "ANSIBLE_RETRY_FILES_ENABLED": "False",
           "PATH": f"{BIN}:{os.environ['PATH']}"}
    return subprocess.run([str(BIN / "ansible-playbook"), "-i", str(tmp_path / "inventory.ini"), f"kexec.kho.{playbook}", *args],
                          capture_output=True, text=True, env=env, cwd=tmp_path, check=False, timeout=300)


def plays(playbook: str) -> list:
    return yaml.safe_load((COLLECTION / "playbooks" / f"{playbook}.yml").read_text())


@pytest.mark.parametrize("playbook", PLAYBOOKS)
def test_no_targets_is_refused(tmp_path, playbook):
    proc = run(tmp_path, playbook)
    assert proc.returncode != 0 and "set kho_targets (-e kho_targets=GROUP)" in proc.stdout, proc.stdout[-3000:]
    assert "web-1" not in proc.stdout


@pytest.mark.parametrize("playbook", PLAYBOOKS)
@pytest.mark.parametrize("limit", [(), ("--limit", "web-1")], ids=["inventory", "limit"])
def test_a_pattern_that_matches_no_host_fails_naming_it(tmp_path, playbook, limit):
    # ansible-playbook itself says "skipping: no hosts matched" and exits 0; with --limit, a play on localhost alone
    # would be skipped too, so the guard runs on localhost and every host.
    proc = run(tmp_path, playbook, "-e", "kho_targets=kho_typo", *limit)
    assert proc.returncode != 0, proc.stdout[-3000:]
    assert "kho_targets=kho_typo matches no host of the inventory" in proc.stdout, proc.stdout[-3000:]
    assert ("within --limit web-1" in proc.stdout) == bool(limit)


@pytest.mark.parametrize("playbook", PLAYBOOKS)
def test_targets_outside_the_limit_are_no_match(tmp_path, playbook):
    proc = run(tmp_path, playbook, "-e", "kho_targets=web-2", "--limit", "web-1")
    assert proc.returncode != 0 and "kho_targets=web-2 matches no host" in proc.stdout, proc.stdout[-3000:]


def test_a_list_of_targets_is_a_pattern_too(tmp_path):
    proc = run(tmp_path, "enable", "-e", json.dumps({"kho_targets": ["kho_typo", "other_typo"]}))
    assert proc.returncode != 0 and "kho_targets=kho_typo,other_typo matches no host" in proc.stdout, proc.stdout[-3000:]


@pytest.mark.parametrize("playbook", PLAYBOOKS)
def test_hosts_are_only_the_targets_one_batch_at_a_time(playbook):
    targets = plays(playbook)[1]
    assert "kho_targets | default([])" in targets["hosts"]
    assert targets["serial"] == "{{ kho_serial | default(1) }}"
    assert targets["max_fail_percentage"] == "{{ kho_max_fail_percentage | default(0) }}"


def _hosts_per_play(stdout: str) -> dict:
    """--list-hosts' answer: {play name: [hosts]}."""
    found, play = {}, None
    for line in stdout.splitlines():
        m = re.match(r"\s*play #\d+ \([^)]*\): (.*?)\s+TAGS:", line)
        if m:
            play = found.setdefault(m.group(1), [])
        elif play is not None and line.startswith("      ") and line.strip() and ":" not in line:
            play.append(line.strip())
    return found


@pytest.mark.parametrize("staged", [False, True], ids=["one step", "staged"])
def test_staged_mode_stages_every_target_then_switches_them_and_nothing_else(tmp_path, staged):
    """kho_staged: the stage and the switch play take the targets, the one-step play none (and the other way)."""
    proc = run(tmp_path, "handover", "--list-hosts", "-e", "kho_targets=kho", "-e", f"kho_staged={staged}")
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-2000:]
    hosts = _hosts_per_play(proc.stdout)
    names = ("Hand hosts over to their new kernel, batch by batch", "Stage every host (staged mode)",
             "Switch the staged hosts, batch by batch (staged mode)")
    one, stage, switch = (sorted(hosts[n]) for n in names)
    assert (one, stage, switch) == (([], ["web-1", "web-2"], ["web-1", "web-2"]) if staged
                                    else (["web-1", "web-2"], [], []))
    staged_plays = {p["name"]: p for p in plays("handover")}
    assert "serial" not in staged_plays["Stage every host (staged mode)"]  # every host at once, at the forks
    assert staged_plays["Switch the staged hosts, batch by batch (staged mode)"]["serial"] == "{{ kho_serial | default(1) }}"


def _enable_local(tmp_path: Path, config: str | None) -> subprocess.CompletedProcess:
    """enable in check mode on a local host, with a next kernel whose config is ``config`` (None: no config)."""
    image = tmp_path / "boot" / "vmlinuz-7.3.4-kho"
    image.parent.mkdir()
    image.write_bytes(b"not read: only its config is")
    if config is not None:
        (tmp_path / "boot" / "config-7.3.4-kho").write_text(config)
    inventory = (f"[kho]\nweb-1 ansible_connection=local ansible_become=false "
                 f"ansible_python_interpreter={sys.executable}\n")
    return run(tmp_path, "enable", "--check", "-e", "kho_targets=kho", "-e", f"kho_enable_next_kernel={image}",
               inventory=inventory)


def _task(stdout: str, name: str) -> str:
    """What a task printed, from its header to the next one."""
    found = re.search(rf"TASK \[{re.escape(name)}\].*?\n(.*?)(?=\nTASK \[|\nPLAY |\Z)", stdout, re.S)
    return found.group(1) if found else ""


CHECK = "KHO is built into the kernel that boots next (kho_enable_next_kernel), else into the running one"
WRITE = "Set kho=on and the regions in the boot loader"


@pytest.mark.parametrize("config, why", [
    ("CONFIG_KEXEC=y\n# CONFIG_KEXEC_HANDOVER is not set\n", "config-7.3.4-kho has no CONFIG_KEXEC_HANDOVER=y"),
    (None, "config-7.3.4-kho cannot be read"),
], ids=["built-without", "no-config"])
def test_enable_refuses_a_next_kernel_without_kho_before_writing(tmp_path, config, why):
    proc = _enable_local(tmp_path, config)
    assert proc.returncode != 0, proc.stdout[-3000:]
    check = _task(proc.stdout, CHECK)
    assert "fatal: [web-1]" in check and why in check and "Nothing was changed on this host" in check, proc.stdout[-3000:]
    assert "docs/kernel.md" in check and "files/kho.config" in check
    assert f"TASK [{WRITE}]" not in proc.stdout


def test_enable_goes_on_where_the_next_kernel_has_kho(tmp_path):
    proc = _enable_local(tmp_path, "CONFIG_KEXEC_FILE=y\nCONFIG_KEXEC_HANDOVER=y\n")
    assert "ok: [web-1]" in _task(proc.stdout, CHECK), proc.stdout[-3000:]
    assert f"TASK [{WRITE}]" in proc.stdout  # in check mode: whatever this machine's boot loader, nothing is written

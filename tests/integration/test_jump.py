"""The jump's verdict on the connections fleets use, on real lab guests: an ssh_config alias, a ProxyJump
bastion, a jump the host refuses after the trigger, and a guest frozen mid-jump (a half-open connection)."""

from __future__ import annotations

import json
import sys
import threading
import time
from pathlib import Path

import pytest
from test_faults import assert_untouched, guest_run, kexec_wrapper
from test_role import KERNEL, handover
from test_targets import run_playbook

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "lab"))
import lab  # noqa: E402  (the lab's own monitor client)

pytestmark = pytest.mark.lab_full  # make test-lab


def alias_names(guests: dict) -> list:
    return Path(guests["inventory_alias"]).read_text().split("\n\n")[0].splitlines()[1:]


def test_alias_and_bastion_hand_over_verified(lab_factory, tmp_path):
    """No address or port in the inventory: an ssh_config alias, and the second guest behind the first as a bastion."""
    guests = lab_factory(2)
    names = alias_names(guests)
    assert names[1].endswith(f"-via-{names[0]}")
    proc, summary = handover({**guests, "inventory": guests["inventory_alias"]}, tmp_path)
    assert proc.returncode == 0, proc.stdout[-6000:]
    for name in names:
        result = summary[name]
        assert result["verdict"] == "verified", result
        assert result["detection"] == "connection", result  # the inventory name is no address: real attempts
        # The attempt that read the new boot id is the whole detection delay: one round trip, the bastion's included.
        assert result["detect_latency"] is not None and result["detect_latency"] < 15, result
        print(f"{name}: downtime {result['downtime']} s, detect latency {result['detect_latency']} s")


FAILING_KEXEC = kexec_wrapper(
    "# loads like kexec-tools; the jump itself fails, after the trigger was accepted",
    "if [ \"$1\" = -e ]; then echo 'kexec: the jump failed (lab fault)' >&2; exit 1; fi",
    'exec /usr/sbin/kexec.real "$@"',
)


def test_a_jump_that_fails_after_the_trigger_is_undone(lab_factory, tmp_path):
    guests = lab_factory()
    name = guests["guests"][0]["name"]
    guest_run(guests, tmp_path, FAILING_KEXEC)
    started = time.monotonic()
    proc, summary = handover(guests, tmp_path)
    assert proc.returncode != 0
    result = summary[name]
    assert result["verdict"] == "failed, rolled back", result
    assert "the jump did not happen: the jump command returned (exit 1)" in result["error"], result
    assert result["boot_id_after"] is None
    assert time.monotonic() - started < 300  # the old boot said so: no wait for not_jumped_after or kexec_timeout
    assert_untouched(guests, tmp_path)  # unloaded, not handed over, the lock released


def freeze_at_the_jump(guest: dict, seen: dict, timeout: float = 240) -> None:
    """Stop the guest's CPUs (HMP `stop`) as soon as its old kernel prints that it starts the new one."""
    serial = Path(guest["serial"])
    offset = serial.stat().st_size
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with serial.open("rb") as f:
            f.seek(offset)
            if b"Starting new kernel" in f.read():
                lab.monitor(guest["monitor"], "stop", timeout=30)
                seen["frozen_at"] = time.monotonic()
                return
        time.sleep(0.05)


def test_a_guest_frozen_mid_jump_ends_within_the_timeout_plus_one_attempt(lab_factory, tmp_path):
    """kexec_timeout (3 s) shorter than one attempt; every poll reaches QEMU's port and then nothing (half-open)."""
    guests = lab_factory()
    guest = guests["guests"][0]
    playbook = tmp_path / "jump.yml"
    playbook.write_text(
        "- hosts: kho_lab\n  gather_facts: false\n  tasks:\n"
        "    - kexec.kho.kho_kexec: {state: executed, kernel: " + KERNEL + ", kexec_timeout: 3, connect_timeout: 5}\n"
        "      register: jump\n      ignore_errors: true\n"
        "    - ansible.builtin.copy:\n        content: '{{ jump | to_json }}'\n        dest: '{{ kho_tmp }}/jump.json'\n"
        "        mode: '0644'\n      delegate_to: localhost\n")
    seen = {}
    watcher = threading.Thread(target=freeze_at_the_jump, args=(guest, seen), daemon=True)
    watcher.start()
    run_playbook(playbook, guests["inventory_alias"], tmp_path)
    watcher.join(1)
    result = json.loads((tmp_path / "jump.json").read_text())
    assert "frozen_at" in seen, "the guest never printed 'Starting new kernel'"
    assert result["failed"] and result["jumped"] is None and result["boot_id_after"] is None, result
    # kexec_timeout plus one attempt (connect_timeout plus the action's 10 s), plus a poll interval's slack
    assert result["waited"] <= 3 + 5 + 10 + 1, result
    assert "did not answer on a new boot id within 3 s" in result["msg"], result

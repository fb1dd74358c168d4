"""#37 item 1 on real lab guests, with pipelining (the lab's inventory sets it): the connection of the run that loads
and queues the jump is cut while that run goes on, and the verdict is the truth about the jump.

A dropped SSH channel sends the run no SIGHUP: it loads and queues the jump after the controller's first polls.
Before #37 those polls read the old boot's missing jump status as "the trigger never ran", rolled back, and the host
jumped afterwards.  Now the run says who it is on the host before it changes anything (its jump status, with its pid)
and every poll says whether that process is alive: the wait goes on while it runs, and "did not jump" comes only
from the host's own word.

    make layout-lab host venv-oldest
    cd build-lab/ansible_collections/kexec/kho && ANSIBLE_COLLECTIONS_PATH=$PWD/../../.. \
        python -m pytest -ra -p no:cacheprovider -m lab tests/integration/test_lab_jump_race.py

(or the whole matrix, `make test-lab`, of which these tests are a part: marker lab_full).
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from test_faults import guest_run, kexec_wrapper
from test_role import KERNEL, facts, handover
from test_targets import run_playbook

pytestmark = pytest.mark.lab_full  # make test-lab; not the lean tier

CUT_SECONDS = 12  # how long the cut-off run goes on before it loads: several polls of the old boot meanwhile

CUT_WHILE_THE_RUN_GOES_ON = kexec_wrapper(
    "# Fires once, at the load in the run that loads and queues the jump: every SSH session dies (the controller",
    "# loses the run's answer), and the run goes on without its session: it loads and queues the jump later.",
    "if [ \"$2\" = -l ]; then",
    "  mv -f /usr/sbin/kexec.real /usr/sbin/kexec",
    "  pkill -KILL -f '^sshd: root'",
    f"  sleep {CUT_SECONDS}",
    '  exec /usr/sbin/kexec "$@"',
    "fi",
    'exec /usr/sbin/kexec.real "$@"',
)

CUT_THEN_THE_RUN_DIES_AFTER_ITS_LOAD = kexec_wrapper(
    "# Fires once: every SSH session dies at the load, the run goes on and loads, then it is killed (SIGKILL, no",
    "# undo) before it could queue the jump.  Its jump status on the host says it loaded.",
    "if [ \"$2\" = -l ]; then",
    "  mv -f /usr/sbin/kexec.real /usr/sbin/kexec",
    "  pkill -KILL -f '^sshd: root'",
    "  sleep 4",
    '  /usr/sbin/kexec "$@"; rc=$?',
    "  kill -KILL $PPID  # the module's own process (pipelining: the interpreter that runs it)",
    "  exit $rc",
    "fi",
    'exec /usr/sbin/kexec.real "$@"',
)


def jump_alone(guests: dict, tmp_path: Path) -> dict:
    """kho_kexec state=executed alone (no role): its registered result, whatever it was."""
    playbook = tmp_path / "jump.yml"
    playbook.write_text(
        "- hosts: kho_lab\n  gather_facts: false\n  tasks:\n"
        f"    - kexec.kho.kho_kexec: {{state: executed, kernel: {KERNEL}, kexec_timeout: 240}}\n"
        "      register: jump\n      ignore_errors: true\n"
        "    - ansible.builtin.copy:\n        content: '{{ jump | to_json }}'\n        dest: '{{ kho_tmp }}/jump.json'\n"
        "        mode: '0644'\n      delegate_to: localhost\n")
    proc = run_playbook(playbook, guests["inventory"], tmp_path, check=False)
    path = tmp_path / "jump.json"
    assert path.exists(), proc.stdout[-4000:]
    return json.loads(path.read_text())


def test_a_load_cut_off_while_its_run_goes_on_is_waited_for_and_jumps_once(lab_factory, tmp_path):
    """kho_kexec alone: the load's answer is lost, the polls find this run running on the old boot and wait; the
    run loads and queues the jump; the verdict is the jump (true), with the host on a new boot that got the
    handover, once."""
    guests = lab_factory()
    name = guests["guests"][0]["name"]
    before = facts(guests, tmp_path)[name]
    guest_run(guests, tmp_path, CUT_WHILE_THE_RUN_GOES_ON)
    jump = jump_alone(guests, tmp_path)
    assert jump["load"]["triggered"] is None, jump  # the answer was lost: the race of #37 item 1 was run
    assert jump["old_boot_answers"] >= 1, jump  # the old boot answered while the run went on
    assert not jump.get("failed") and jump["jumped"] is True and jump["handover_received"] is True, jump
    assert jump["boot_id_before"] == before["boot_id"] and jump["boot_id_after"] != before["boot_id"], jump
    after = facts(guests, tmp_path)[name]
    assert after["boot_id"] == jump["boot_id_after"] and after["in"]["present"], after
    assert after["in"]["kexec_metadata"]["kexec_count"] == 1, after["in"]  # one jump, not a rollback and a jump


def test_the_role_with_its_load_cut_off_hands_over_verified_once(lab_factory, tmp_path):
    """The same cut under the role: verified, one jump; never 'failed, rolled back (the host did not jump)'."""
    guests = lab_factory()
    name = guests["guests"][0]["name"]
    before = facts(guests, tmp_path)[name]
    guest_run(guests, tmp_path, CUT_WHILE_THE_RUN_GOES_ON)
    proc, summary = handover(guests, tmp_path)
    result = summary.get(name, {})
    assert proc.returncode == 0, proc.stdout[-6000:]
    assert result["verdict"] == "verified" and result["boot_id_before"] == before["boot_id"], result
    assert result["kexec_count"] == 1 and result["boot_id_after"] != before["boot_id"], result


def test_a_run_killed_after_its_load_did_not_jump_and_its_load_is_undone(lab_factory, tmp_path):
    """The answer lost, then the run killed after its load (no undo of its own): its process is gone and its status
    says it loaded and never queued the jump: jumped false, the image it loaded unloaded, the old boot as it was."""
    guests = lab_factory()
    name = guests["guests"][0]["name"]
    before = facts(guests, tmp_path)[name]
    guest_run(guests, tmp_path, CUT_THEN_THE_RUN_DIES_AFTER_ITS_LOAD)
    jump = jump_alone(guests, tmp_path)
    assert jump["failed"] and jump["jumped"] is False and jump["load"]["triggered"] is None, jump
    assert "ended before it queued the jump" in jump["msg"], jump
    assert jump["load"]["loaded_here"] is True and jump["unloaded"] is True, jump  # its status said it loaded
    after = facts(guests, tmp_path)[name]
    assert after["boot_id"] == before["boot_id"] and after["kexec_loaded"] is False, after  # left as it was

"""The role's rescue decides whether the host jumped from kho_kexec's registered result alone (#37): the role's own
expression (roles/handover/tasks/main.yml, 'Keep what failed'), run by ansible-playbook over the results it can meet."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from ansible_collections.kexec.kho.plugins.plugin_utils import _jump

ROOT = Path(__file__).resolve().parents[3]

# (what _kho_handover_jump holds when the rescue runs, whether the rescue counts it as jumped)
CASES = [
    ({}, False),  # the jump task never ran (a failure in preflight)
    ({"failed": True, "jumped": False, "msg": "nothing was jumped"}, False),
    ({"failed": True, "jumped": None, "msg": "did not answer on a new boot id"}, True),  # unknown: never backed out
    ({"failed": True, "jumped": True, "msg": "no handover data"}, True),
    # The jump task's result without jumped (whatever raised in it): unknown, never false.
    ({"failed": True, "msg": "Unexpected failure during module execution", "exception": "Traceback"}, True),
]


def rescue_expression() -> str:
    tasks = yaml.safe_load((ROOT / "roles" / "handover" / "tasks" / "main.yml").read_text())
    keep = next(t for t in tasks[0]["rescue"] if t["name"] == "Keep what failed")
    return keep["ansible.builtin.set_fact"]["_kho_handover_jumped"]


def decided(tmp_path, play, env: dict | None = None) -> list:
    """Run the play on localhost; what it wrote to out."""
    (tmp_path / "play.yml").write_text(json.dumps(play))
    (tmp_path / "inventory").write_text(f"web-1 ansible_connection=local ansible_python_interpreter={sys.executable}\n")
    env = {**os.environ, "ANSIBLE_LOCAL_TEMP": str(tmp_path / "tmp"), "ANSIBLE_NOCOLOR": "1", **(env or {})}
    proc = subprocess.run([str(Path(sys.executable).parent / "ansible-playbook"), "-i", str(tmp_path / "inventory"),
                           "-e", f"out={tmp_path / 'r.json'}", str(tmp_path / "play.yml")],
                          capture_output=True, text=True, env=env, timeout=300, check=False)
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-2000:]
    return json.loads((tmp_path / "r.json").read_text())


def test_a_jump_result_without_jumped_is_unknown_never_false(tmp_path):
    if ROOT.parents[1].name != "ansible_collections":
        pytest.skip("runs from an ansible_collections/kexec/kho layout (tests/utils/layout.sh)")
    play = [{"hosts": "all", "gather_facts": False, "tasks": [
        {"ansible.builtin.set_fact": {"decided": []}},
        {"ansible.builtin.set_fact": {"decided": "{{ decided + [_jumped | bool] }}"},
         "vars": {"_jumped": rescue_expression()},
         "loop": [case for case, _jumped in CASES], "loop_control": {"loop_var": "_kho_handover_jump"}},
        {"ansible.builtin.copy": {"content": "{{ decided | to_json }}", "dest": "{{ out }}", "mode": "0600"}}]}]
    assert decided(tmp_path, play) == [jumped for _case, jumped in CASES]


# (what the back-out registered, whether the verdict is 'refused, nothing changed' rather than 'failed, rolled back')
UNDONE = [
    ({}, True),  # refused in preflight: nothing ran
    ({"_kho_handover_undo_lock": {"changed": True}}, True),  # the run's own lock, taken and released, is no change
    ({"_kho_handover_load": {"undone": []}, "_kho_handover_jump": {"jumped": False, "load": {"undone": []}}}, True),
    ({"_kho_handover_undo_load": {"changed": True}}, False),
    ({"_kho_handover_undo_load": {"failed": True, "changed": False}}, False),  # an unload that failed: not nothing
    ({"_kho_handover_undo_finalize": {"changed": True}}, False),
    ({"_kho_handover_undo_return": {"changed": True}}, False),
    ({"_kho_handover_jump": {"jumped": False, "unloaded": True}}, False),  # the action's own rollback unloaded
    ({"_kho_handover_jump": {"jumped": False, "self_return": {"disarmed": ["/etc/systemd/system/x"]}}}, False),
    ({"_kho_handover_load": {"undone": ["the image unloaded"]}}, False),  # the load's run undid itself
    ({"_kho_handover_enabled": {"changed": True}}, False),  # kho=on written and kept (make test-lab found it said
    # 'refused, nothing changed' after an enable that rebooted the host)
    ({"_kho_handover_enabled": {"changed": False}}, True),  # kho=on was there already
]
SKIPPED = {"skipped": True, "changed": False}  # what a step the rescue skipped registers


def say_what_was_undone() -> dict:
    tasks = yaml.safe_load((ROOT / "roles" / "handover" / "tasks" / "main.yml").read_text())
    back_out = next(t for t in tasks[0]["rescue"] if t["name"] == "Back out a host that never jumped")
    return next(t for t in back_out["block"] if t["name"] == "Say what was undone")


def test_a_refusal_that_changed_nothing_is_told_from_a_rollback_by_fields(tmp_path):
    """The rescue's own task (its vars and set_fact, through the filter kho_back_out), over what the back-out can
    register."""
    if ROOT.parents[1].name != "ansible_collections":
        pytest.skip("runs from an ansible_collections/kexec/kho layout (tests/utils/layout.sh)")
    say = say_what_was_undone()
    defaults = {"_kho_handover_load": {}, "_kho_handover_jump": {}, **{f"_kho_handover_undo_{k}": SKIPPED for k in
                                                                       ("finalize", "load", "return", "lock")}}
    tasks = [{"ansible.builtin.set_fact": {"decided": []}}]
    for registered, _nothing in UNDONE:
        tasks.append({**say, "name": "the rescue's task", "vars": {**defaults, **registered, **say["vars"]}})
        tasks.append({"ansible.builtin.set_fact": {"decided": "{{ decided + [_kho_handover_changed_nothing | bool] }}"}})
    tasks.append({"ansible.builtin.copy": {"content": "{{ decided | to_json }}", "dest": "{{ out }}", "mode": "0600"}})
    got = decided(tmp_path, [{"hosts": "all", "gather_facts": False, "tasks": tasks}],
                  {"ANSIBLE_COLLECTIONS_PATH": str(ROOT.parents[2])})
    assert got == [nothing for _case, nothing in UNDONE]


def test_what_the_back_out_undid_is_said_in_its_order():
    got = _jump.backed_out({"finalize": {"changed": True}, "load": {"failed": True, "msg": "busy"},
                            "return": {"changed": True}, "lock": {"changed": True}}, {"unloaded": True})
    assert got["undone"] == ["the finalize this run made aborted", "the image this run loaded unloaded",
                             "unloading the image failed: busy", "the host's own return disarmed",
                             "its handover lock released"] and got["changed_nothing"] is False
    assert _jump.backed_out({"lock": {"changed": True}, "load": SKIPPED}) == {
        "undone": ["its handover lock released"], "changed_nothing": True}
    assert _jump.backed_out({}, None, None) == {"undone": [], "changed_nothing": True}

"""kho_return_decide and kho_return_outcome (plugins/filter/kho.py, #36): the handover role's way back, decided from
kho_kexec's result and the check the role saw fail, through Ansible's own (tagged, unsafe) types."""

from __future__ import annotations

import copy

import pytest
from ansible.errors import AnsibleFilterError
from ansible.utils.unsafe_proxy import wrap_var

import wayback  # pylint: disable=import-error  # tests/: the recorded trees of a return
from wayback import BACK_BOOT, MID_BOOT, NO_WAY, WAY  # pylint: disable=import-error
from wayback import before_fixture, home_fixture  # noqa: F401  pylint: disable=import-error,unused-import

from ansible_collections.kexec.kho.plugins.filter.kho import kho_return_decide, kho_return_outcome
from ansible_collections.kexec.kho.plugins.plugin_utils import _jump

CANARY = "kexec-kho-canary-g1-1.5-42"


def jump(**kw) -> dict:
    """kho_kexec state=executed's result of a jump to 7.2.13 whose test_command failed on the new boot."""
    failed = _jump.verdict({"boot_id": MID_BOOT, "check": "in"}, 20.0, {"rc": 1, "stderr": "no sshd"}, None)
    return {"jumped": True, "boot_id_after": MID_BOOT, "way_back": WAY, "changed": True,
            "load": {"target": {"target_release": "7.2.13", "status": "compatible"}}, **failed, **kw}


def back(home, **kw) -> dict:
    """The return's kho_kexec result: back on the old kernel with its facts read (facts_after)."""
    return {"jumped": True, "boot_id_after": BACK_BOOT, "downtime": 19.5, "facts_read": True, "msg": "back",
            "ansible_facts": {"kho": home}, "pstore_found": [CANARY], **kw}


def test_the_failed_check_comes_from_kho_kexecs_field_and_decides_a_return():
    got = kho_return_decide(wrap_var(jump()), jump()["failed_check"])
    assert got["go"] is True and got["failed_check"] == "test_command" and got["way_back"] == WAY
    assert "handing the host back to 7.3.4" in got["why"]


@pytest.mark.parametrize(("kw", "args", "why"), [
    ({"way_back": NO_WAY}, {}, "no way back was recorded"),
    ({}, {"policy": "never"}, "the return policy is never"),
    ({}, {"answers": False}, "does not answer"),
    ({"jumped": None}, {}, "unknown"),
])
def test_no_return_is_decided_where_the_fields_say_no(kw, args, why):
    got = kho_return_decide(jump(**kw), "test_command", **args)
    assert got["go"] is False and why in got["why"], got


def test_values_as_ansible_core_2_16_templates_them():
    for none in ("", "None"):
        assert kho_return_decide(jump(), none)["failed_check"] is None
        assert kho_return_decide(jump(), none)["go"] is False
    assert kho_return_decide(jump(), "test_command", "False")["go"] is False  # a string "False" is false
    assert kho_return_decide(jump(), "test_command", "True")["go"] is True
    with pytest.raises(AnsibleFilterError, match="maybe"):
        kho_return_decide(jump(), "test_command", "maybe")


def test_a_bad_policy_or_check_is_a_filter_error_naming_it():
    with pytest.raises(AnsibleFilterError, match="'always'"):
        kho_return_decide(jump(), "test_command", policy="always")
    with pytest.raises(AnsibleFilterError, match="'verify'"):
        kho_return_outcome(jump(), failed="verify")


def test_a_return_that_came_home_says_so_with_both_halves(before, home):
    out = kho_return_outcome(wrap_var(jump()), wrap_var(back(home)), wrap_var(before), "test_command",
                             "the test command failed: no sshd", canary=CANARY)
    assert out["verdict"] == "returned to 7.3.4: the new kernel 7.2.13 failed at test_command", out
    assert out["returned"] is True and out["returned_to"] == "7.3.4" and out["return"]["failures"] == []
    assert out["failure"].endswith("no sshd") and out["back"]["boot_id_after"] == BACK_BOOT
    assert out["return"]["taken"]["kept"] == ["oops", "trace"]


@pytest.mark.parametrize(("change", "word"), [
    (lambda b: b.update(pstore_found=[]), "the canary written again before the return is in no pstore record"),
    (lambda b: b["ansible_facts"]["kho"]["in"].update(present=False), "received no handover data"),
    (lambda b: b["ansible_facts"]["kho"].update(release="7.2.13"), "not the old kernel 7.3.4"),
])
def test_a_return_that_did_not_come_home_is_never_returned(before, home, change, word):
    answer = back(copy.deepcopy(home))
    change(answer)
    out = kho_return_outcome(jump(), answer, before, "test_command", canary=CANARY)
    assert out["verdict"] == "failed after the jump and the return" and out["returned"] is False, out
    assert any(word in f for f in out["return"]["failures"]), out["return"]


@pytest.mark.parametrize("answer", [
    {"jumped": False, "failed": True, "msg": "refused: the old kernel does not read what the new one sends"},
    {"jumped": None, "failed": True, "msg": "gone, not back"},
    {"jumped": True, "facts_read": False, "boot_id_after": BACK_BOOT},
    {},  # the return's task never answered
])
def test_a_return_without_the_old_kernels_word_is_the_failed_return(before, answer):
    out = kho_return_outcome(jump(), answer, before, "test_command")
    assert out["verdict"] == "failed after the jump and the return" and out["return"] is None, out
    assert out["back"]["msg"] == answer.get("msg")


def test_no_return_made_keeps_the_old_verdict_and_says_why(before, home):
    out = kho_return_outcome(jump(way_back=NO_WAY), back(home), before, "test_command")
    assert out["verdict"] == "failed after the jump" and out["returned"] is False and "back" not in out
    assert "no way back was recorded" in out["decision"]


def test_a_failure_after_the_jump_with_no_check_named_decides_nothing(before):
    out = kho_return_outcome({"jumped": True, "failed": True, "msg": "an exception"}, None, before, None)
    assert out["verdict"] == "failed after the jump" and out["returned"] is False and out["failed_check"] is None


# ---------------------------------------------------------------- the host's own return (confirm_timeout)

def by_itself(home, state="returning", **kw) -> dict:
    """The jump's result where the boot that answered is the old kernel again, with this run's note."""
    note = {"run_id": wayback.RUN, "old_boot_id": wayback.OLD_BOOT, "new_boot_id": MID_BOOT, "old_release": "7.3.4",
            "new_release": "7.2.13", "timeout": 90, "state": state, "rc": None if state == "returning" else 1}
    return {"jumped": True, "run_id": wayback.RUN, "boot_id_before": wayback.OLD_BOOT, "boot_id_after": BACK_BOOT,
            "way_back": WAY, "ansible_facts": {"kho": home}, "self_return": {"armed": {"armed": True}, "note": note},
            **kw}


def test_a_host_that_returned_by_itself_says_so_from_its_note_and_the_old_kernels_facts(before, home):
    out = kho_return_outcome(wrap_var(by_itself(home)), before=wrap_var(before))
    assert out["verdict"] == "returned by the host: not confirmed within 90 s" and out["returned"] is True, out
    assert out["by_host"] is True and out["returned_to"] == "7.3.4" and out["return"]["failures"] == []
    assert out["return"]["taken"]["kept"] == ["oops", "trace"] and out["failed_check"] is None


@pytest.mark.parametrize(("change", "word"), [
    (lambda j: j["self_return"]["note"].update(state="load-failed", rc=1), "stayed on 7.2.13: load-failed 1"),
    (lambda j: j["ansible_facts"]["kho"].update(release="7.2.13"), "answers on 7.2.13"),
    (lambda j: j["ansible_facts"]["kho"]["in"].update(present=False), "not home"),
    (lambda j: j.update(ansible_facts={}), "answers on None"),
])
def test_a_return_by_the_host_that_did_not_come_home_is_the_failed_return(before, home, change, word):
    result = by_itself(copy.deepcopy(home))
    change(result)
    out = kho_return_outcome(wrap_var(result), before=wrap_var(before))
    assert out["verdict"] == "failed after the jump and the return" and out["returned"] is False, out
    assert word in out["decision"], out


def test_another_runs_note_is_not_this_runs_return(before, home):
    result = by_itself(home, run_id="another-run")
    out = kho_return_outcome(wrap_var(result), before=wrap_var(before))
    assert out["verdict"] == "failed after the jump" and out["returned"] is False
    assert out["decision"] == "no note of this run's return on the host", out

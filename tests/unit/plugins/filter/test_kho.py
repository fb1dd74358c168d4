"""plugins/filter/kho.py: fdt_decode, kho_query, the handover's verifications and the way back's filters.

fdt_decode and kho_query, including Ansible's own (tagged, unsafe) types.

kho_handover_checks: the role's verification as one decision, on the recorded 7.3.4 handover (simulated trees).

kho_return_decide and kho_return_outcome (plugins/filter/kho.py, #36): the handover role's way back, decided from
kho_kexec's result and the check the role saw fail, through Ansible's own (tagged, unsafe) types."""

from __future__ import annotations

import base64
import copy

import pytest
import simtree  # pylint: disable=import-error  # tests/: the simulated trees
import wayback  # pylint: disable=import-error  # tests/: the recorded trees of a return
from ansible.errors import AnsibleFilterError
from ansible.utils.unsafe_proxy import wrap_var
from wayback import BACK_BOOT, MID_BOOT, NO_WAY, WAY  # pylint: disable=import-error
from wayback import before_fixture, home_fixture  # noqa: F401  pylint: disable=import-error,unused-import
from receiver import OOPS_START  # pylint: disable=import-error  # tests/: the recorded sides of oops and trace
from receiver import kept_fixture, sent_fixture  # noqa: F401  pylint: disable=import-error,unused-import

from ansible_collections.kexec.kho.plugins.filter.kho import (
    fdt_decode, kho_handover_checks, kho_liveupdate_verify, kho_query, kho_regions_verify, kho_return_decide,
    kho_return_outcome, kho_rollout_stopped,
)
from ansible_collections.kexec.kho.plugins.module_utils._kho import facts, host, liveupdate
from ansible_collections.kexec.kho.plugins.plugin_utils import _jump, _receiver
from ansible_collections.kexec.kho.plugins.plugin_utils._decode import facts_from_raw


def test_fdt_decode_real_memblock(fixtures):
    blob = base64.b64encode((fixtures / "handover1" / "in_sub_fdts_memblock").read_bytes()).decode()
    rec = fdt_decode(wrap_var(blob))
    assert rec["reserve_mem"][0] == {"name": "oops", "start": 0x3EB00000, "size": 0x100000}


def test_fdt_decode_real_root_and_metadata(fixtures):
    root = fdt_decode(base64.b64encode((fixtures / "handover1" / "in_fdt").read_bytes()).decode())
    assert root["handover"]["compatible"] == "kho-v4"
    assert set(root["handover"]["listed"]) == {"memblock", "kho_test", "kexec-metadata"}
    meta = fdt_decode(base64.b64encode((fixtures / "handover2" / "in_sub_fdts_kexec-metadata").read_bytes()).decode(),
                      "kexec-metadata")
    assert meta["metadata"] == {"version": 1, "previous_release": "7.3.4", "kexec_count": 2}


def test_fdt_decode_errors_are_filter_errors(fixtures):
    truncated = base64.b64encode((fixtures / "cold" / "out_fdt").read_bytes()).decode()
    with pytest.raises(AnsibleFilterError, match="truncated"):
        fdt_decode(truncated)
    with pytest.raises(AnsibleFilterError, match="base64"):
        fdt_decode("%%%")
    with pytest.raises(AnsibleFilterError, match="byteorder"):
        fdt_decode(truncated, None, "middle")


def test_kho_query_on_ansible_types():
    facts = wrap_var({"in": {"reserve_mem": [{"name": "oops", "start": 5}, {"name": "trace", "start": 9}]},
                      "release": "7.3.4"})
    assert kho_query(facts, wrap_var("in.reserve_mem[?name=='oops'].start | [0]")) == 5
    assert kho_query(facts, "starts_with(release, '7.')") is True
    assert kho_query(facts, "contains(in.reserve_mem[].name, 'trace')") is True
    assert kho_query(facts, "length(keys(@))") == 2


def test_kho_query_bad_expression():
    with pytest.raises(AnsibleFilterError, match="kho_query"):
        kho_query({}, "in.[")


def read(tmp_path, generation: str) -> dict:
    opts = simtree.build(generation, tmp_path / generation)
    kho = host.from_params(opts)
    return facts_from_raw(facts.gather(kho, kho.debugfs_mounted()))


@pytest.fixture(name="pair")
def _pair(tmp_path, fixtures):
    return read(tmp_path, "live-cold"), read(tmp_path, "live-handover")


def test_the_recorded_handover_verifies_with_its_region_report(pair):
    before, after = pair
    check = kho_handover_checks(before, after, method="kexec", found=["c-1"], canary="c-1")
    assert check["failures"] == [] and check["liveupdate"] is None, check["failures"]
    assert check["taken"]["kept"] == ["oops", "trace"] and check["taken"]["lost"] == []
    assert [r["name"] for r in check["regions"]] == ["oops", "trace"]
    assert all(r["revived"] is True and r["start_after"] == r["start_before"] for r in check["regions"])


def broken(after: dict, change) -> dict:
    after = copy.deepcopy(after)
    change(after)
    return after


@pytest.mark.parametrize(("change", "kwargs", "sentence"), [
    (lambda a: a["in"].update(present=False), {}, "reserve_mem regions before the jump"),
    (lambda a: a["in"].update(reserve_mem=[]), {}, "handed over but not taken up by the new kernel: "),
    (lambda a: a["in"].update(known_version=False), {}, "unknown incoming root compatible"),
    (lambda a: a["in"]["kexec_metadata"].update(kexec_count=5), {}, "expected previous release 7.3.4 and count 1"),
    (lambda a: a["log"].append("[    0.8] luo: session x: restore failed"), {}, "a producer reported a failed restore"),
    (lambda a: None, {"canary": "c-1", "found": []}, "the canary written through /dev/pmsg0 before the jump"),
])
def test_each_check_that_does_not_hold_is_named(pair, change, kwargs, sentence):
    before, after = pair
    check = kho_handover_checks(before, broken(after, change), method="kexec", **kwargs)
    assert len(check["failures"]) >= 1 and any(sentence in f for f in check["failures"]), check["failures"]


def test_held_sessions_need_a_target_that_reads_them_or_the_workloads_checks(pair):
    before, after = pair
    before = copy.deepcopy(before)
    before["liveupdate"]["sessions"] = [{"name": "db", "pid": 4242}, {"name": "systemd", "pid": 1}]
    for support, checks, failing in (("unknown", False, True), ("compatible", False, False), ("unknown", True, False)):
        failures = kho_handover_checks(before, after, method="kexec", support=support, luo_checks=checks)["failures"]
        assert any("LUO sessions db were held" in f for f in failures) is failing, (support, checks, failures)


def test_regions_allowed_to_go_are_dropped_not_failed(pair):
    before, after = pair
    after = broken(after, lambda a: a["in"].update(reserve_mem=[]))  # never received: not taken up
    assert any("not taken up" in f for f in kho_handover_checks(before, after, method="kexec")["failures"])
    check = kho_handover_checks(before, after, method="kexec", allowed=["oops", "trace"])
    assert not any("not taken up" in f for f in check["failures"]) and check["taken"]["dropped"] == ["oops", "trace"]


def test_facts_that_are_not_facts_are_refused_with_the_reason(pair):
    before, _after = pair
    with pytest.raises(AnsibleFilterError, match="kho_regions_verify"):
        kho_handover_checks(before, {"in": "nonsense"}, method="kexec")


def with_sessions(before: dict, after: dict, number, incoming, device_after: bool) -> tuple:
    """The recorded pair with the lab's LUO selftest holding its sessions before the jump (liveupdate=on)."""
    before, after = copy.deepcopy(before), copy.deepcopy(after)
    before["liveupdate"].update(device=True, registered=True, outgoing={"compatible": "luo-v5", "next_number": number},
                                sessions=[{"name": "kexec_simple_state", "pid": 167}, {"name": "test-session", "pid": 167}])
    after["liveupdate"].update(device=device_after, registered=device_after, incoming_number=incoming)
    return before, after


def test_a_new_kernel_that_cannot_give_the_sessions_back_is_not_verified(pair):
    """Issue 37, the lab's finding: verified, 'number 1 (expected 1)', and in the new boot the selftest's stage 2
    could not open /dev/liveupdate.  The number says the state was read; only the device gives sessions back."""
    before, after = with_sessions(*pair, number=1, incoming=1, device_after=False)
    failures = kho_handover_checks(before, after, method="kexec", support="compatible")["failures"]
    assert len(failures) == 1 and "did not register /dev/liveupdate" in failures[0], failures
    assert "session kexec_simple_state, session test-session" in failures[0], failures
    before, after = with_sessions(*pair, number=1, incoming=1, device_after=True)
    check = kho_handover_checks(before, after, method="kexec", support="compatible")
    assert check["failures"] == [] and check["liveupdate"]["device_after"] is True, check["failures"]


def test_unknown_liveupdate_numbers_are_not_verified_for_a_compatible_target(pair):
    """Item 7: both numbers unknown and the target 'compatible' passed every check."""
    before, after = with_sessions(*pair, number=None, incoming=None, device_after=True)
    failures = kho_handover_checks(before, after, method="kexec", support="compatible")["failures"]
    assert failures and "logged no liveupdate number, no number was read" in failures[0], failures


def test_a_users_record_in_the_log_does_not_revive_a_region(pair):
    """Item 6, through the role's filter: the log is the only evidence (no live out/ tree, no reserve_mem_param)."""
    before, after = pair
    after = broken(after, lambda a: a.update(interface="finalize", reserve_mem_param=None, log=[
        "[   20.1] myapp[812]: Revived memory reservation 'oops' from KHO",
        "[   20.2] myapp[812]: Revived memory reservation 'trace' from KHO"]))
    check = kho_handover_checks(before, after, method="kexec")
    assert check["taken"]["kept"] == [] and any("gave no record" in f for f in check["failures"]), check["failures"]


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


# ---------------------------------------------------------------- kho_regions_verify and kho_liveupdate_verify

@pytest.mark.parametrize("after, needle", [
    ({"in": {"reserve_mem": "x"}}, "after.in.reserve_mem"),
    ({"out": {"reserve_mem": [{"name": "oops", "start": "0", "size": 1}]}}, "after.out.reserve_mem"),
    ({"log": "Revived"}, "after.log"),
    ({"reserve_mem_param": [1]}, "after.reserve_mem_param"),
    ({"in": "x"}, "after.in is"),
    ({"out": ["x"]}, "after.out is"),
    ([], "ansible_facts.kho"),
])
def test_the_regions_filter_refuses_malformed_facts_with_the_reason(sent, after, needle):
    with pytest.raises(AnsibleFilterError, match=needle.replace(".", r"\.")):
        kho_regions_verify(sent, after)


def test_the_regions_filter_refuses_a_bad_log_before(sent, kept):
    with pytest.raises(AnsibleFilterError, match=r"before\.log is"):
        kho_regions_verify({**sent, "log": {"a": 1}}, kept)


def test_the_regions_filter_refuses_a_bad_allowed_list(sent, kept):
    with pytest.raises(AnsibleFilterError, match="allowed to go"):
        kho_regions_verify(sent, kept, "oops")


@pytest.mark.parametrize("before, needle", [
    ({"sessions": [{"name": "x"}]}, r"before\.sessions\[0\]\.pid"),
    ({"sessions": "x"}, "expected a list of mappings"),
    ({"systemd": {"kexec_count": "1"}}, r"before\.systemd\.kexec_count"),
    ({"systemd": {"preserving_units": [{"fd_store": 1}]}}, r"preserving_units\[0\]\.unit"),
    ({"outgoing": {"next_number": True}}, "next_number"),
    ({"restore_failures": {"sessions": "abc"}}, r"restore_failures\.sessions"),
    (None, "expected ansible_facts.kho.liveupdate"),
])
def test_the_live_update_filter_refuses_malformed_facts_with_the_reason(before, needle):
    with pytest.raises(AnsibleFilterError, match=needle):
        kho_liveupdate_verify(before, {}, "kexec")


def test_the_live_update_filter_refuses_an_unresolved_method():
    with pytest.raises(AnsibleFilterError, match="expected kexec or systemctl"):
        kho_liveupdate_verify({}, {}, "auto")


def test_sessions_the_new_kernel_could_not_restore_are_lost_from_its_own_log():
    """As on the lab with a target built without CONFIG_LIVEUPDATE_MEMFD: the number came, the sessions did not."""
    log = ["[    0.8] luo: Retrieved live update data, liveupdate number: 1",
           "[   12.1] luo: No registered handler for compatible 'memfd-v2'",
           "[   12.1] luo: Failed to deserialize files for session [kexec_simple_state] -ENOENT"]
    after = {"device": True, "registered": True, "incoming_number": 1,
             "restore_failures": liveupdate.restore_failures(log)}
    before = {"device": True, "outgoing": {"next_number": 1}, "sessions": [{"name": "kexec_simple_state", "pid": 167}]}
    result = kho_liveupdate_verify(before, after, "kexec")
    assert result["lost"] == ["LUO session kexec_simple_state could not be restored by the new kernel (its log: Failed to "
                              "deserialize files; no registered handler for memfd-v2)"]
    assert kho_liveupdate_verify(before, {**after, "restore_failures": liveupdate.restore_failures(log[:1])},
                                 "kexec")["lost"] == []


@pytest.mark.parametrize("line", [
    "[    1.3] ramoops: using 0x100000@0123, ecc: 0",
    "[    1.3] ramoops: using 0x100000@" + "1" * 5000 + ", ecc: 0",
    "[    1.3] ramoops: using 0x100000@0x" + "f" * 17 + ", ecc: 0",
    "[    1.3] ramoops: using 1048576@1051721728, ecc: 0",
])
def test_the_region_filters_name_a_number_they_cannot_read(sent, kept, line):
    """Item 8: int(x, 0) raised a bare ValueError on '@0123' and on a 4,300-digit number."""
    with pytest.raises(AnsibleFilterError, match="not in the form the kernel writes: ramoops: using 0xSIZE@0xSTART"):
        kho_regions_verify(sent, {**kept, "log": [line]})
    assert _receiver.ramoops_at(f"ramoops: using 0x100000@{OOPS_START:#x}, ecc: 0") == OOPS_START
    for other in ("ramoops: using module parameters", "ramoops:using 0x1@0x2, ecc: 0"):  # other messages
        assert _receiver.ramoops_at(other) is None
    kept = {**kept, "log": kept["log"] + ["[    1.2] ramoops: using module parameters"]}  # on every such boot
    assert kho_regions_verify(sent, kept)["regions"][0]["ramoops"] is True


def test_the_rollout_stop_reads_each_targets_result_from_hostvars():
    hostvars = {"a": {"kho_handover_result": {"failed_step": None}}, "b": {"kho_handover_result": {"failed_step": "stage"}},
                "c": {}}  # c: no result, never got through its stage
    assert kho_rollout_stopped(["a"], hostvars, 0) == ""
    assert kho_rollout_stopped(["a", "b", "c"], hostvars, "0").startswith("2 of 3 hosts failed (b, c)")
    with pytest.raises(AnsibleFilterError, match="not a number"):
        kho_rollout_stopped(["a"], hostvars, "lots")

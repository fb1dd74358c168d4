"""kho_handover_verify: the role's verification as one decision, on the recorded 7.3.4 handover (simulated trees)."""

from __future__ import annotations

import copy

import pytest
import simtree
from ansible.errors import AnsibleFilterError

from ansible_collections.kexec.kho.plugins.filter.kho import kho_handover_verify
from ansible_collections.kexec.kho.plugins.module_utils._kho import facts, host
from ansible_collections.kexec.kho.plugins.plugin_utils._handover import facts_from_raw


def read(tmp_path, generation: str) -> dict:
    opts = simtree.build(generation, tmp_path / generation)
    kho = host.KhoHost(opts["debugfs_root"], opts["sysfs_root"], opts["procfs_root"], opts["devfs_root"])
    return facts_from_raw(facts.gather(kho, kho.debugfs_mounted()))


@pytest.fixture(name="pair")
def _pair(tmp_path, fixtures):
    return read(tmp_path, "live-cold"), read(tmp_path, "live-handover")


def test_the_recorded_handover_verifies_with_its_region_report(pair):
    before, after = pair
    check = kho_handover_verify(before, after, method="kexec", found=["c-1"], canary="c-1")
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
    check = kho_handover_verify(before, broken(after, change), method="kexec", **kwargs)
    assert len(check["failures"]) >= 1 and any(sentence in f for f in check["failures"]), check["failures"]


def test_held_sessions_need_a_target_that_reads_them_or_the_workloads_checks(pair):
    before, after = pair
    before = copy.deepcopy(before)
    before["liveupdate"]["sessions"] = [{"name": "db", "pid": 4242}, {"name": "systemd", "pid": 1}]
    for support, checks, failing in (("unknown", False, True), ("compatible", False, False), ("unknown", True, False)):
        failures = kho_handover_verify(before, after, method="kexec", support=support, luo_checks=checks)["failures"]
        assert any("LUO sessions db were held" in f for f in failures) is failing, (support, checks, failures)


def test_regions_allowed_to_go_are_dropped_not_failed(pair):
    before, after = pair
    after = broken(after, lambda a: a["in"].update(reserve_mem=[]))  # never received: not taken up
    assert any("not taken up" in f for f in kho_handover_verify(before, after, method="kexec")["failures"])
    check = kho_handover_verify(before, after, method="kexec", allowed=["oops", "trace"])
    assert not any("not taken up" in f for f in check["failures"]) and check["taken"]["dropped"] == ["oops", "trace"]


def test_facts_that_are_not_facts_are_refused_with_the_reason(pair):
    before, _after = pair
    with pytest.raises(AnsibleFilterError, match="kho_regions_verify"):
        kho_handover_verify(before, {"in": "nonsense"}, method="kexec")


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
    failures = kho_handover_verify(before, after, method="kexec", support="compatible")["failures"]
    assert len(failures) == 1 and "did not register /dev/liveupdate" in failures[0], failures
    assert "session kexec_simple_state, session test-session" in failures[0], failures
    before, after = with_sessions(*pair, number=1, incoming=1, device_after=True)
    check = kho_handover_verify(before, after, method="kexec", support="compatible")
    assert check["failures"] == [] and check["liveupdate"]["device_after"] is True, check["failures"]


def test_unknown_liveupdate_numbers_are_not_verified_for_a_compatible_target(pair):
    """Item 7: both numbers unknown and the target 'compatible' passed every check."""
    before, after = with_sessions(*pair, number=None, incoming=None, device_after=True)
    failures = kho_handover_verify(before, after, method="kexec", support="compatible")["failures"]
    assert failures and "logged no liveupdate number, no number was read" in failures[0], failures


def test_a_users_record_in_the_log_does_not_revive_a_region(pair):
    """Item 6, through the role's filter: the log is the only evidence (no live out/ tree, no reserve_mem_param)."""
    before, after = pair
    after = broken(after, lambda a: a.update(interface="finalize", reserve_mem_param=None, log=[
        "[   20.1] myapp[812]: Revived memory reservation 'oops' from KHO",
        "[   20.2] myapp[812]: Revived memory reservation 'trace' from KHO"]))
    check = kho_handover_verify(before, after, method="kexec")
    assert check["taken"]["kept"] == [] and any("gave no record" in f for f in check["failures"]), check["failures"]

"""plugin_utils/_receiver.py: the receiver's word.  Which regions the new kernel took up (the recorded handover with
oops and trace, and the kernel's own log lines, matched whole), and what of the live update state it can give back."""

from __future__ import annotations

import pytest
from receiver import OOPS_START, SESSION, STORE, facts, log  # pylint: disable=import-error  # tests/
from receiver import kept_fixture, sent_fixture  # noqa: F401  pylint: disable=import-error,unused-import
from wayback import side  # pylint: disable=import-error  # tests/: a recorded side decoded as kho_facts does

from ansible_collections.kexec.kho.plugins.module_utils._kho import liveupdate
from ansible_collections.kexec.kho.plugins.plugin_utils import _receiver


def test_a_kernel_that_revived_both_regions_keeps_them(sent, kept):
    result = _receiver.taken_up(sent, kept)
    assert result["kept"] == ["oops", "trace"] and result["lost"] == [] and result["dropped"] == []
    oops = result["regions"][0]
    assert oops["evidence"] == {"log": True, "out_tree": True} and oops["ramoops"] is True


def test_sent_is_not_kept_a_kernel_without_the_regions_loses_them(sent, kept):
    """As on the lab: the incoming tree lists both, but the new kernel has no memblock and no revival line."""
    after = {**kept, "out": {"present": True, "reserve_mem": []}, "reserve_mem_param": None,
             "log": [line for line in kept["log"] if "Revived" not in line and "ramoops" not in line]}
    result = _receiver.taken_up(sent, after)
    assert result["kept"] == [] and len(result["lost"]) == 2
    assert all(r["received"] and r["revived"] is False for r in result["regions"])
    assert "oops: handed over but not revived" in result["lost"][0]
    assert result["ramoops_detached"] == ["oops"]


def test_one_region_of_two_dropped_as_allowed(sent, kept):
    after = {**kept, "reserve_mem_param": ["oops"],
             "out": {**kept["out"], "reserve_mem": [r for r in kept["out"]["reserve_mem"] if r["name"] == "oops"]},
             "log": [line for line in kept["log"] if "'trace'" not in line]}
    result = _receiver.taken_up(sent, after, allowed=["trace"])
    assert result["kept"] == ["oops"] and result["dropped"] == ["trace"] and result["lost"] == []
    assert _receiver.taken_up(sent, after)["lost"][0].startswith("trace:")


def test_a_region_placed_elsewhere_or_refused_by_the_log_is_not_kept(sent, kept):
    moved = [{**r, "start": r["start"] + 0x100000} for r in kept["out"]["reserve_mem"]]
    after = {**kept, "out": {**kept["out"], "reserve_mem": moved},
             "log": ["KHO reserve-mem 'oops' has wrong size (0x100000 != 0x200000)"]}
    result = _receiver.taken_up(sent, after)
    assert [r["evidence"] for r in result["regions"]] == [{"log": False, "out_tree": False}, {"out_tree": False}]
    assert result["kept"] == []


def test_a_new_kernel_that_says_nothing_is_unknown_and_fails_safe(sent, kept):
    after = {"interface": "finalize", "in": kept["in"], "out": {"present": False}, "log": None, "reserve_mem_param": None}
    result = _receiver.taken_up(sent, after)
    assert [r["revived"] for r in result["regions"]] == [None, None]
    assert "gave no record" in result["lost"][0]


def test_a_region_missing_from_the_incoming_tree_is_lost(sent, kept):
    after = {**kept, "in": {**kept["in"], "reserve_mem": []}}
    assert _receiver.taken_up(sent, after)["lost"][0] == "oops: not in the incoming tree"


def test_the_recorded_handover_without_the_regions_is_lost(fixtures):
    """Recorded on the lab (no-regions/): sent (the incoming memblock lists oops), not taken up (no revival line,
    no memblock in the new kernel's own out/ tree)."""
    incoming = side(fixtures, "no-regions", "in")
    assert [r["name"] for r in incoming["reserve_mem"]] == ["oops"]
    before = {"out": {"reserve_mem": incoming["reserve_mem"]},
              "log": [f"[    1.2] ramoops: using 0x100000@{OOPS_START:#x}, ecc: 0"]}
    after = {"interface": "live", "in": incoming, "out": side(fixtures, "no-regions", "out"),
             "log": log(fixtures, "no-regions"), "reserve_mem_param": None}
    assert "memblock" not in after["out"]["sub_blobs"]
    result = _receiver.taken_up(before, after)
    assert result["kept"] == [] and result["lost"][0].startswith("oops: handed over but not revived")
    assert result["regions"][0]["evidence"] == {"out_tree": False} and result["ramoops_detached"] == ["oops"]
    assert _receiver.taken_up(before, after, allowed=["oops"])["dropped"] == ["oops"]


def test_a_line_that_is_not_the_kernels_message_is_no_revival(sent, kept):
    """Item 6: a record that only contains the kernel's words (a process's, or any other message) proves nothing."""
    after = {**kept, "out": {"present": True, "reserve_mem": []}, "interface": "finalize", "reserve_mem_param": None,
             "log": ["[   12.5] myapp[812]: Revived memory reservation 'oops' from KHO",
                     "[   12.6] Revived memory reservation 'trace' from KHO (said twice)"]}
    result = _receiver.taken_up(sent, after)
    assert [r["revived"] for r in result["regions"]] == [None, None] and result["kept"] == []
    assert "gave no record" in result["lost"][0]


@pytest.mark.parametrize("refusal", [
    "[    0.05] KHO reserve-mem 'oops' has wrong size (0x100000 != 0x200000)",
    "[    0.05] KHO reserve-mem 'oops' has wrong alignment (0x2000, 0x3eb01000)",
    "[    0.05] FDT 'memblock' has no child 'oops': -1",
    "[    0.05] Node 'oops' is incompatible with 'reserve-mem-v1': -1",
    "[    0.05] FDT 'memblock' is incompatible with 'memblock-v1': -1",
    "[    0.05] failed to retrieve FDT 'memblock' from KHO: -22",
])
def test_a_not_revived_line_wins_over_a_revived_one(sent, kept, refusal):
    """Item 6: the first match no longer decides; any line of the kernel's saying it did not revive a region does."""
    after = {**kept, "log": ["[    0.04] Revived memory reservation 'oops' from KHO", refusal]}
    oops = _receiver.taken_up(sent, after)["regions"][0]
    assert oops["evidence"]["log"] is False and oops["revived"] is False


def test_verify_passes_when_everything_came_across():
    before = facts(sessions=[SESSION], number=3, count=0)
    after = facts(number=4, incoming=3, count=0)
    assert _receiver.verify(before, after, "kexec")["lost"] == []
    before = facts(units=[STORE], number=3, count=0)
    after = facts(units=[STORE], number=4, incoming=3, count=1)
    assert _receiver.verify(before, after, "systemctl")["lost"] == []


def test_an_luo_entry_that_carried_nothing_loses_nothing():
    """A target without LUO logs no liveupdate number; with no session and no preserved store, nothing was lost."""
    assert _receiver.verify(facts(number=1), facts(incoming=None), "kexec")["lost"] == []
    assert _receiver.verify(facts(sessions=[SESSION], number=1), facts(incoming=None), "kexec")["lost"][0].startswith(
        "the new kernel logged no liveupdate number, the old one was to hand over 1")


def test_verify_names_every_loss():
    before = facts(sessions=[SESSION], units=[STORE], number=3, count=0)
    after = facts(units=[{**STORE, "fd_store": 0}], incoming=None, count=0)
    lost = _receiver.verify(before, after, "systemctl")["lost"]
    assert lost == [
        "the new kernel logged no liveupdate number, the old one was to hand over 3: the LUO state is not shown to "
        "have come across",
        "systemd's KExecCount is 0 after the jump, 0 before: PID 1 did not come through the kexec with its "
        "serialised state",
        "cache.service came back active with 0 of its 1 stored fds",
        "LUO session test-session held by pid 167 (luo_kexec_simpl) was lost: systemctl kexec stopped its process",
    ]
    assert _receiver.verify(facts(units=[STORE]), facts(units=[]), "systemctl")["lost"][-1] == (
        "cache.service came back without its preservation with 0 of its 1 stored fds")
    # after kexec -e a restarted service refills its store: the count is no proof, the loss is by construction
    assert _receiver.verify(facts(units=[STORE]), facts(units=[STORE]), "kexec")["lost"] == [
        "cache.service's fd store (1 fds) was lost: kexec -e bypasses systemd, which never serialised it"]
    assert _receiver.verify(facts(device=False, number=3), {}, "kexec")["lost"] == []  # no LUO: nothing to check


HANDED = facts(sessions=[SESSION, {**SESSION, "name": "kexec_simple_state"}], number=1)


@pytest.mark.parametrize(("after", "words"), [
    # the lab's finding: the number came (the state was read), and no /dev/liveupdate to get the sessions back
    (facts(incoming=1, device=False), "the new kernel did not register /dev/liveupdate (it booted without "
                                      "liveupdate=on, or without LUO): nothing in it can give back session "
                                      "test-session, session kexec_simple_state"),
    (facts(incoming=1, registered=None), "whether the new kernel registered /dev/liveupdate is not known"),
    (facts(incoming=1, device=False, registered=True), "registered /dev/liveupdate, but the device node is missing"),
])
def test_sessions_count_as_kept_only_where_the_new_kernel_can_hand_them_back(after, words):
    result = _receiver.verify(HANDED, after, "kexec")
    assert len(result["lost"]) == 1 and words in result["lost"][0] and result["device_after"] is False, result
    kept = _receiver.verify(HANDED, facts(incoming=1), "kexec")
    assert kept["lost"] == [] and kept["device_after"] is True


def test_systemds_stores_also_need_the_device_in_the_new_boot():
    before = facts(units=[STORE], number=3, count=0)
    lost = _receiver.verify(before, facts(units=[STORE], incoming=3, count=1, device=False), "systemctl")["lost"]
    assert lost == ["the new kernel did not register /dev/liveupdate (it booted without liveupdate=on, or without "
                    "LUO): nothing in it can give back cache.service's fd store"]


def test_unknown_liveupdate_numbers_with_held_sessions_are_a_loss():
    """Item 7: both numbers unknown (no outgoing LUO entry read, no incoming line) gave verified."""
    for expected, incoming, words in ((None, None, "logged no liveupdate number, no number was read"),
                                      (None, 1, "logged liveupdate number 1, no number was read"),
                                      (2, None, "logged no liveupdate number, the old one was to hand over 2")):
        lost = _receiver.verify(facts(sessions=[SESSION], number=expected), facts(incoming=incoming), "kexec")["lost"]
        assert lost == [f"the new kernel {words}: the LUO state is not shown to have come across"], lost
    assert _receiver.verify(facts(number=None), facts(incoming=None), "kexec")["lost"] == []  # nothing held: nothing lost


def test_after_one_failed_restore_no_session_can_be_retrieved():
    """The kernel deserializes every session at the first open of /dev/liveupdate; one failure fails every open."""
    log = ["[   12.1] luo: No registered handler for compatible 'memfd-v2'",
           "[   12.1] luo: Failed to deserialize files for session [kexec_simple_state] -ENOENT"]
    after = {**facts(incoming=1), "restore_failures": liveupdate.restore_failures(log)}
    assert _receiver.verify(HANDED, after, "kexec")["lost"] == [
        "LUO session kexec_simple_state could not be restored by the new kernel (its log: Failed to deserialize "
        "files; no registered handler for memfd-v2)",
        "session test-session cannot be retrieved either: after a failed restore the new kernel refuses every open of "
        "/dev/liveupdate"]

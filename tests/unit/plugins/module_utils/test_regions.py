"""The regions a handover carries: what a target command line keeps, and what the new kernel says it took up."""

from __future__ import annotations

import base64

import pytest
from ansible.errors import AnsibleFilterError

from ansible_collections.kexec.kho.plugins.filter.kho import kho_liveupdate_verify, kho_regions_verify
from ansible_collections.kexec.kho.plugins.module_utils._kho import regions
from ansible_collections.kexec.kho.plugins.plugin_utils import _handover

RUNNING = "root=/dev/vda kho=on reserve_mem=1M:4096:oops ramoops.mem_name=oops reserve_mem=4M:2M:trace"
OOPS_START = 0x3EB00000


def side(fixtures, directory: str, name: str) -> dict:
    """One side (in or out) of a recorded directory, decoded as the kho_facts action does."""
    raw = {"present": True, "fdt": None, "sub_blobs": {}}
    for f in (fixtures / directory).glob(f"{name}_sub_fdts_*"):
        raw["sub_blobs"][f.name[len(name) + len("_sub_fdts_"):]] = base64.b64encode(f.read_bytes()).decode()
    facts, errors = _handover.decode_side(raw, name)
    assert errors == []
    return {**facts, "present": True}


def log(fixtures, directory: str) -> list:
    return (fixtures / directory / "dmesg_kho.txt").read_text().splitlines()


@pytest.fixture
def before(fixtures) -> dict:
    """The cold-booted kernel about to hand over oops and trace (its own out/ memblock, and ramoops on oops)."""
    return {"out": side(fixtures, "cold", "out"), "interface": "live",
            "log": [f"[    1.2] ramoops: using 0x100000@{OOPS_START:#x}, ecc: 0"]}


@pytest.fixture
def kept(fixtures) -> dict:
    """The kernel booted by that handover with the same reserve_mem= (recorded: it revived both)."""
    return {"interface": "live", "in": side(fixtures, "handover1", "in"), "out": side(fixtures, "handover1", "out"),
            "log": log(fixtures, "handover1") + [f"[    1.3] ramoops: using 0x100000@{OOPS_START:#x}, ecc: 0"],
            "reserve_mem_param": ["oops", "trace"]}


@pytest.mark.parametrize("target, dropped", [
    (RUNNING, []),
    ("root=/dev/vda kho=on", ["oops", "trace"]),
    ("root=/dev/vda kho=on reserve_mem=1M:4096:oops", ["trace"]),
    ("root=/dev/vda kho=on reserve_mem=2M:4096:oops reserve_mem=4M:2M:trace", ["oops"]),
    ("root=/dev/vda kho=on reserve_mem=1M:8M:oops reserve_mem=4M:1M:trace", ["oops"]),
    ("root=/dev/vda kho=on reserve_mem=1M::oops reserve_mem=4M:2M:trace", []),
])
def test_a_target_line_keeps_the_regions_it_names_with_the_same_size_and_alignment(target, dropped):
    assert [d["name"] for d in regions.dropped_by(RUNNING, target)] == dropped


def test_the_refusal_names_each_region_and_the_way_out():
    assert regions.refused(RUNNING, RUNNING) is None
    msg = regions.refused(RUNNING, "root=/dev/vda kho=on reserve_mem=2M:4096:oops")
    assert "'trace'" in msg and "asks 2097152 bytes for 'oops'" in msg and "drop_regions" in msg
    assert regions.refused(RUNNING, "root=/dev/vda kho=on", allowed=["oops", "trace"]) is None
    assert "'oops'" not in regions.refused(RUNNING, "root=/dev/vda kho=on", allowed=["oops"])


def test_a_kernel_that_revived_both_regions_keeps_them(before, kept):
    result = regions.taken_up(before, kept)
    assert result["kept"] == ["oops", "trace"] and result["lost"] == [] and result["dropped"] == []
    oops = result["regions"][0]
    assert oops["evidence"] == {"log": True, "out_tree": True} and oops["ramoops"] is True


def test_sent_is_not_kept_a_kernel_without_the_regions_loses_them(before, kept):
    """As on the lab: the incoming tree lists both, but the new kernel has no memblock and no revival line."""
    after = {**kept, "out": {"present": True, "reserve_mem": []}, "reserve_mem_param": None,
             "log": [line for line in kept["log"] if "Revived" not in line and "ramoops" not in line]}
    result = regions.taken_up(before, after)
    assert result["kept"] == [] and len(result["lost"]) == 2
    assert all(r["received"] and r["revived"] is False for r in result["regions"])
    assert "oops: handed over but not revived" in result["lost"][0]
    assert result["ramoops_detached"] == ["oops"]


def test_one_region_of_two_dropped_as_allowed(before, kept):
    after = {**kept, "reserve_mem_param": ["oops"],
             "out": {**kept["out"], "reserve_mem": [r for r in kept["out"]["reserve_mem"] if r["name"] == "oops"]},
             "log": [line for line in kept["log"] if "'trace'" not in line]}
    result = regions.taken_up(before, after, allowed=["trace"])
    assert result["kept"] == ["oops"] and result["dropped"] == ["trace"] and result["lost"] == []
    assert regions.taken_up(before, after)["lost"][0].startswith("trace:")


def test_a_region_placed_elsewhere_or_refused_by_the_log_is_not_kept(before, kept):
    moved = [{**r, "start": r["start"] + 0x100000} for r in kept["out"]["reserve_mem"]]
    after = {**kept, "out": {**kept["out"], "reserve_mem": moved},
             "log": ["KHO reserve-mem 'oops' has wrong size (0x100000 != 0x200000)"]}
    result = regions.taken_up(before, after)
    assert [r["evidence"] for r in result["regions"]] == [{"log": False, "out_tree": False}, {"out_tree": False}]
    assert result["kept"] == []


def test_a_new_kernel_that_says_nothing_is_unknown_and_fails_safe(before, kept):
    after = {"interface": "finalize", "in": kept["in"], "out": {"present": False}, "log": None, "reserve_mem_param": None}
    result = regions.taken_up(before, after)
    assert [r["revived"] for r in result["regions"]] == [None, None]
    assert "gave no record" in result["lost"][0]


def test_a_region_missing_from_the_incoming_tree_is_lost(before, kept):
    after = {**kept, "in": {**kept["in"], "reserve_mem": []}}
    assert regions.taken_up(before, after)["lost"][0] == "oops: not in the incoming tree"


@pytest.mark.parametrize("after, needle", [
    ({"in": {"reserve_mem": "x"}}, "after.in.reserve_mem"),
    ({"out": {"reserve_mem": [{"name": "oops", "start": "0", "size": 1}]}}, "after.out.reserve_mem"),
    ({"log": "Revived"}, "after.log"),
    ({"reserve_mem_param": [1]}, "after.reserve_mem_param"),
    ({"in": "x"}, "after.in is"),
    ({"out": ["x"]}, "after.out is"),
    ([], "ansible_facts.kho"),
])
def test_the_regions_filter_refuses_malformed_facts_with_the_reason(before, after, needle):
    with pytest.raises(AnsibleFilterError, match=needle.replace(".", r"\.")):
        kho_regions_verify(before, after)


def test_the_regions_filter_refuses_a_bad_log_before(before, kept):
    with pytest.raises(AnsibleFilterError, match=r"before\.log is"):
        kho_regions_verify({**before, "log": {"a": 1}}, kept)


def test_the_regions_filter_refuses_a_bad_allowed_list(before, kept):
    with pytest.raises(AnsibleFilterError, match="allowed to go"):
        kho_regions_verify(before, kept, "oops")


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
    from ansible_collections.kexec.kho.plugins.module_utils._kho import liveupdate
    log = ["[    0.8] luo: Retrieved live update data, liveupdate number: 1",
           "[   12.1] luo: No registered handler for compatible 'memfd-v2'",
           "[   12.1] luo: Failed to deserialize files for session [kexec_simple_state] -ENOENT"]
    after = {"device": True, "incoming_number": 1, "restore_failures": liveupdate.restore_failures(log)}
    before = {"device": True, "outgoing": {"next_number": 1}, "sessions": [{"name": "kexec_simple_state", "pid": 167}]}
    result = kho_liveupdate_verify(before, after, "kexec")
    assert result["lost"] == ["LUO session kexec_simple_state could not be restored by the new kernel (its log: Failed to "
                              "deserialize files; no registered handler for memfd-v2)"]
    assert kho_liveupdate_verify(before, {**after, "restore_failures": liveupdate.restore_failures(log[:1])},
                                 "kexec")["lost"] == []


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
    result = regions.taken_up(before, after)
    assert result["kept"] == [] and result["lost"][0].startswith("oops: handed over but not revived")
    assert result["regions"][0]["evidence"] == {"out_tree": False} and result["ramoops_detached"] == ["oops"]
    assert regions.taken_up(before, after, allowed=["oops"])["dropped"] == ["oops"]


@pytest.mark.parametrize("running, target, dropped", [
    ("reserve_mem=1M:0:oops", "reserve_mem=1M:64:oops", []),  # both a cache line: the kernel rounds 0 up to 64
    ("reserve_mem=1M:0:oops", "reserve_mem=1M:8M:oops", ["oops"]),  # the start is not promised to be 8M-aligned
    ("reserve_mem=1M:4096:oops", "reserve_mem=1M:4096:oops reserve_mem=2M:4096:oops", []),  # the first one counts
    ("reserve_mem=1M:4096:oops", "reserve_mem=2M:4096:oops reserve_mem=1M:4096:oops", ["oops"]),
])
def test_the_kernels_own_rules_decide_what_a_line_keeps(running, target, dropped):
    assert [d["name"] for d in regions.dropped_by(running, target)] == dropped

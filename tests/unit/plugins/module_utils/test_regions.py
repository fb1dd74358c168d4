"""The regions a handover carries: what a target command line keeps, and what the new kernel says it took up."""

from __future__ import annotations

import pytest
from ansible.errors import AnsibleFilterError

from wayback import side  # pylint: disable=import-error  # tests/: a recorded side decoded as kho_facts does

from ansible_collections.kexec.kho.plugins.filter.kho import kho_liveupdate_verify, kho_regions_verify
from ansible_collections.kexec.kho.plugins.module_utils._kho import regions

RUNNING = "root=/dev/vda kho=on reserve_mem=1M:4096:oops ramoops.mem_name=oops reserve_mem=4M:2M:trace"
OOPS_START = 0x3EB00000


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
    after = {"device": True, "registered": True, "incoming_number": 1,
             "restore_failures": liveupdate.restore_failures(log)}
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


# ---------------------------------------------------------------- issue 37: only the kernel's word, exact where it can be

def test_a_line_that_is_not_the_kernels_message_is_no_revival(before, kept):
    """Item 6: a record that only contains the kernel's words (a process's, or any other message) proves nothing."""
    after = {**kept, "out": {"present": True, "reserve_mem": []}, "interface": "finalize", "reserve_mem_param": None,
             "log": ["[   12.5] myapp[812]: Revived memory reservation 'oops' from KHO",
                     "[   12.6] Revived memory reservation 'trace' from KHO (said twice)"]}
    result = regions.taken_up(before, after)
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
def test_a_not_revived_line_wins_over_a_revived_one(before, kept, refusal):
    """Item 6: the first match no longer decides; any line of the kernel's saying it did not revive a region does."""
    after = {**kept, "log": ["[    0.04] Revived memory reservation 'oops' from KHO", refusal]}
    oops = regions.taken_up(before, after)["regions"][0]
    assert oops["evidence"]["log"] is False and oops["revived"] is False


@pytest.mark.parametrize("target, start, dropped, words", [
    ("reserve_mem=1M:8192:oops", OOPS_START, [], ()),  # the lab's finding: 0x3eb00000 meets 8192, revived
    ("reserve_mem=1M:1M:oops", OOPS_START, [], ()),
    ("reserve_mem=1M:2M:oops", OOPS_START, ["oops"], ("0x200000", "0x3eb00000")),  # 1003 MiB is odd
    ("reserve_mem=1M:8192:oops", OOPS_START + 0x1000, ["oops"], ("0x2000", "0x3eb01000")),
    ("reserve_mem=1M:8192:oops", None, ["oops"], ("not known here", "does not promise")),  # start unknown: caution
])
def test_the_known_start_decides_the_alignment(target, start, dropped, words):
    """First paragraph, "exact where the facts allow": the kernel's own test is start & (align - 1)."""
    running = "reserve_mem=1M:4096:oops"
    got = regions.dropped_by(running, target, {"oops": start} if start is not None else {})
    assert [d["name"] for d in got] == dropped
    assert all(w in got[0]["reason"] for w in words)


def test_the_running_kernels_tree_gives_the_starts(fixtures, tmp_path):
    for directory in ("cold", "handover1"):
        blob = (fixtures / directory / "out_sub_fdts_memblock").read_bytes()
        assert regions.memblock_starts(blob) == {"oops": OOPS_START, "trace": 0x3E600000}
    blob = (fixtures / "cold" / "out_sub_fdts_memblock").read_bytes()
    for bad in (None, b"", blob[:100], b"\0" * 64, blob[:8] + b"\xff" * (len(blob) - 8),
                (fixtures / "cold" / "out_sub_fdts_kexec-metadata").read_bytes()):
        assert regions.memblock_starts(bad) == {}
    assert regions.memblock_starts(blob, "big") != regions.memblock_starts(blob)  # native-endian numbers


def test_preflight_accepts_an_alignment_the_known_start_meets(tmp_path):
    """Through the load's own plan (kexec.plan_load), on the simulated cold host (its out/ memblock tree)."""
    from test_state_modules import FakeModule, make_host, params

    from ansible_collections.kexec.kho.plugins.module_utils._kho import kexec as K
    kho = make_host(tmp_path, "live-cold")
    running = kho.cmdline()
    kx = K.Kexec(FakeModule(kho), str(tmp_path / "run"))
    result, steps = K.plan_load(FakeModule(kho), kho, kx, params(tmp_path, cmdline=running.replace(":4096:oops", ":8192:oops")))
    assert steps == ["load"] and result["dropped_regions"] == []
    with pytest.raises(K.KexecError, match=r"alignment of 0x200000 for 'oops', which its start 0x3eb00000"):
        K.plan_load(FakeModule(kho), kho, kx, params(tmp_path, cmdline=running.replace(":4096:oops", ":2M:oops")))


PSTORE = "root=/dev/vda kho=on reserve_mem=1M:4096:oops ramoops.mem_name=oops ramoops.pmsg_size=65536"


@pytest.mark.parametrize("target, words", [
    (PSTORE, None),
    (PSTORE.replace(":4096:", ":8192:") + " ramoops.pmsg_size=0x10000", None),  # same start, same zones
    (PSTORE + " ramoops.pmsg_size=65537", None),  # ramoops rounds down to a power of two
    ("root=/dev/vda kho=on reserve_mem=1M:4096:oops", "it has no ramoops.mem_name=, the running line"),
    (PSTORE + " ramoops.mem_name=trace reserve_mem=1M:4096:trace", "it has ramoops.mem_name=trace"),
    ("root=/dev/vda kho=on ramoops.mem_name=oops ramoops.pmsg_size=65536", "no reserve_mem= for 'oops'"),
    (PSTORE.replace(":4096:", ":2M:"), "which its start 0x3eb00000 does not meet"),
    (PSTORE.replace("65536", "16384"), "its ramoops.pmsg_size is 16384, the running line's 65536"),
    (PSTORE + " ramoops.ecc=16", "its ramoops.ecc is 16, the running line's 0"),
    (PSTORE + " ramoops.record_size=0", "its ramoops.record_size is 0"),
])
def test_a_canary_is_refused_where_the_target_would_not_attach_ramoops_to_its_region(target, words):
    """First paragraph: the canary jumped and only then failed; now the load refuses it, naming why."""
    why = regions.canary_refused(PSTORE, target, {"oops": OOPS_START})
    assert why is None if words is None else (words in why and "canary" in why and "'oops'" in why), why


def test_a_canary_is_judged_only_where_the_running_line_places_ramoops():
    assert regions.canary_refused("root=/dev/vda kho=on", "root=/dev/vda") is None  # ramoops placed elsewhere (DT)
    assert regions.canary_refused("kho=on ramoops.mem_name=nope", "kho=on") is None  # not a region: not ours
    assert "no /dev/pmsg0" in regions.canary_refused(PSTORE.replace("65536", "0"), PSTORE.replace("65536", "0"))


def test_a_canary_with_a_target_that_would_not_attach_ramoops_is_refused_before_the_load(tmp_path):
    """Through kho_kexec state=executed's host run (kexec.start_jump): refused, nothing loaded, nothing queued."""
    from test_state_modules import FakeModule, make_host, params

    from ansible_collections.kexec.kho.plugins.module_utils._kho import kexec as K
    kho = make_host(tmp_path, "live-cold")
    mod = FakeModule(kho)
    with pytest.raises(K.KexecError, match="the target command line would not attach ramoops to that region"):
        K.start_jump(mod, kho, K.Kexec(mod, str(tmp_path / "run")), params(tmp_path, pmsg="c-1", append="ramoops.mem_name=x"))
    assert [c[1:] for c in mod.commands] == [["--help"]] and kho.kexec_loaded() is False  # no load, no queued jump
    # without the canary the same line loads (ramoops is no region's business then)
    assert K.ensure_loaded(mod, kho, K.Kexec(mod, str(tmp_path / "run")), params(tmp_path, append="ramoops.mem_name=x"))["loaded"]


@pytest.mark.parametrize("line", [
    "[    1.3] ramoops: using 0x100000@0123, ecc: 0",
    "[    1.3] ramoops: using 0x100000@" + "1" * 5000 + ", ecc: 0",
    "[    1.3] ramoops: using 0x100000@0x" + "f" * 17 + ", ecc: 0",
    "[    1.3] ramoops: using 1048576@1051721728, ecc: 0",
])
def test_the_region_filters_name_a_number_they_cannot_read(before, kept, line):
    """Item 8: int(x, 0) raised a bare ValueError on '@0123' and on a 4,300-digit number."""
    with pytest.raises(AnsibleFilterError, match="not in the form the kernel writes: ramoops: using 0xSIZE@0xSTART"):
        kho_regions_verify(before, {**kept, "log": [line]})
    assert regions.ramoops_at(f"ramoops: using 0x100000@{OOPS_START:#x}, ecc: 0") == OOPS_START
    for other in ("ramoops: using module parameters", "ramoops:using 0x1@0x2, ecc: 0"):  # other messages
        assert regions.ramoops_at(other) is None
    kept = {**kept, "log": kept["log"] + ["[    1.2] ramoops: using module parameters"]}  # on every such boot
    assert kho_regions_verify(before, kept)["regions"][0]["ramoops"] is True

"""module_utils/_kho/regions.py: the regions a target command line keeps, decided on the host before the load.
What the new kernel took up is plugin_utils/_receiver.py's (tests/unit/plugins/plugin_utils/test_receiver.py)."""

from __future__ import annotations

import pytest
from receiver import OOPS_START  # pylint: disable=import-error  # tests/: the recorded sides of oops and trace

from ansible_collections.kexec.kho.plugins.module_utils._kho import regions

RUNNING = "root=/dev/vda kho=on reserve_mem=1M:4096:oops ramoops.mem_name=oops reserve_mem=4M:2M:trace"


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


@pytest.mark.parametrize("running, target, dropped", [
    ("reserve_mem=1M:0:oops", "reserve_mem=1M:64:oops", []),  # both a cache line: the kernel rounds 0 up to 64
    ("reserve_mem=1M:0:oops", "reserve_mem=1M:8M:oops", ["oops"]),  # the start is not promised to be 8M-aligned
    ("reserve_mem=1M:4096:oops", "reserve_mem=1M:4096:oops reserve_mem=2M:4096:oops", []),  # the first one counts
    ("reserve_mem=1M:4096:oops", "reserve_mem=2M:4096:oops reserve_mem=1M:4096:oops", ["oops"]),
])
def test_the_kernels_own_rules_decide_what_a_line_keeps(running, target, dropped):
    assert [d["name"] for d in regions.dropped_by(running, target)] == dropped


# ---------------------------------------------------------------- issue 37: only the kernel's word, exact where it can be


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
    from fakehost import FakeModule, make_host, params

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
    from fakehost import FakeModule, make_host, params

    from ansible_collections.kexec.kho.plugins.module_utils._kho import kexec as K
    kho = make_host(tmp_path, "live-cold")
    mod = FakeModule(kho)
    with pytest.raises(K.KexecError, match="the target command line would not attach ramoops to that region"):
        K.start_jump(mod, kho, K.Kexec(mod, str(tmp_path / "run")), params(tmp_path, pmsg="c-1", append="ramoops.mem_name=x"))
    assert [c[1:] for c in mod.commands] == [["--help"]] and kho.kexec_loaded() is False  # no load, no queued jump
    # without the canary the same line loads (ramoops is no region's business then)
    assert K.ensure_loaded(mod, kho, K.Kexec(mod, str(tmp_path / "run")), params(tmp_path, append="ramoops.mem_name=x"))["loaded"]

"""module_utils/_kho/facts.py: what kho_facts reads on the host, against simulated trees of each interface generation."""

from __future__ import annotations

import base64
import builtins
import gzip

import pytest
import simtree

from ansible_collections.kexec.kho.plugins.module_utils._kho import facts, host
from ansible_collections.kexec.kho.plugins.plugin_utils._decode import facts_from_raw


def gather(tmp_path, generation, **kw):
    opts = simtree.build(generation, tmp_path / generation, **kw)
    kho = host.from_params(opts)
    return kho, facts_from_raw(facts.gather(kho, kho.debugfs_mounted()))


@pytest.mark.parametrize(("generation", "supported", "enabled", "interface"), [
    ("none", False, False, "none"),
    ("builtin-off", True, False, "none"),
    ("finalize-6.16", True, True, "finalize"),
    ("finalize-6.19", True, True, "finalize"),
    ("live-cold", True, True, "live"),
    ("live-handover", True, True, "live"),
    ("live-7.4", True, True, "live"),
])
def test_generation_detection(tmp_path, fixtures, generation, supported, enabled, interface):
    _kho, f = gather(tmp_path, generation)
    assert (f["supported"], f["enabled"], f["interface"]) == (supported, enabled, interface)
    assert f["debugfs_mounted"] is True
    assert f["boot_id"] == simtree.BOOT_ID and f["release"] == "7.3.4"
    assert f["lockdown"] == "none" and f["kexec_loaded"] is False and f["liveupdate"]["device"] is False


def test_reasons_tell_what_to_do(tmp_path, fixtures):
    assert "CONFIG_KEXEC_HANDOVER" in gather(tmp_path, "none")[1]["reason"]
    assert "add kho=on" in gather(tmp_path, "builtin-off")[1]["reason"]


def test_live_handover_facts(tmp_path, fixtures):
    _kho, f = gather(tmp_path, "live-handover")
    assert f["in"]["present"] and f["in"]["compatible"] == "kho-v4"
    assert f["in"]["kexec_metadata"]["kexec_count"] == 1
    assert f["out"]["fdt"]["status"] == "absent"  # not created after a handover
    assert f["out"]["kexec_metadata"]["kexec_count"] == 2
    assert f["out"]["scratch"][0] == {"phys": 0x37800000, "len": 0x6C00000}
    assert "[    0.700904] test_kho: KHO restore succeeded" in f["log"]
    assert f["params"]["reserve_mem"][0]["label"] == "oops"
    assert f["errors"] == []


def test_the_scratch_area_is_read_under_either_name(tmp_path, fixtures):
    """7.3's scratch_phys/scratch_len and 7.4's bootmem_phys/bootmem_len give the same areas; the line's spelling too."""
    areas = [gather(tmp_path, g)[1]["out"]["scratch"] for g in ("live-handover", "live-7.4")]
    assert areas[0] == areas[1] and areas[0][0] == {"phys": 0x37800000, "len": 0x6C00000}
    params = gather(tmp_path, "live-7.4")[1]["params"]
    assert params["scratch"]["param"] == "kho_bootmem" and params["scratch"]["percent"] == 10


def test_finalize_state_read(tmp_path, fixtures):
    kho, f = gather(tmp_path, "finalize-6.16")
    assert f["out"]["finalized"] is False
    (tmp_path / "finalize-6.16" / "debug" / "kho" / "out" / "finalize").write_text("1\n")
    assert kho.finalized() is True


def test_enabled_by_default_config(tmp_path, fixtures):
    opts = simtree.build("builtin-off", tmp_path / "t")
    (tmp_path / "t" / "proc" / "config.gz").write_bytes(gzip.compress(
        b"CONFIG_KEXEC_HANDOVER=y\nCONFIG_KEXEC_HANDOVER_ENABLE_DEFAULT=y\n"))
    kho = host.from_params(opts)
    raw = facts.gather(kho, True)
    assert raw["supported"] and raw["enabled"] and raw["interface"] == "unknown"
    assert "compiled out" in raw["reason"]
    assert raw["kernel_config"]["CONFIG_KEXEC_HANDOVER_ENABLE_DEFAULT"] == "y"


def test_permission_denied_says_become(tmp_path, fixtures, monkeypatch):
    opts = simtree.build("live-cold", tmp_path / "t")
    kho = host.from_params(opts)
    real_open = builtins.open

    def deny(path, *a, **kw):
        if str(path).startswith(opts["_internal"]["debugfs_root"]):
            raise PermissionError(13, "Permission denied", str(path))
        return real_open(path, *a, **kw)
    monkeypatch.setattr(builtins, "open", deny)
    with pytest.raises(host.NeedsRoot, match="become: true"):
        facts.gather(kho, True)


def test_blobs_travel_as_base64(tmp_path, fixtures):
    opts = simtree.build("live-cold", tmp_path / "t")
    kho = host.from_params(opts)
    raw = facts.gather(kho, True, read_log=False)
    assert raw["log"] is None
    assert base64.b64decode(raw["out"]["sub_blobs"]["memblock"]) == \
        (fixtures / "cold" / "out_sub_fdts_memblock").read_bytes()


# Simulated /boot layouts (no EL image is reachable here): each release's files as the distribution names them.


def test_pstore_search_finds_what_is_there_within_its_bounds(tmp_path):
    from ansible_collections.kexec.kho.plugins.module_utils._kho import facts as FA
    (tmp_path / "fs").mkdir()
    (tmp_path / "fs" / "pmsg-ramoops-0").write_bytes(b"\0kexec-kho-canary-web-1-1795.5-42\n")
    archive = tmp_path / "archive" / "1795"
    archive.mkdir(parents=True)
    (archive / "pmsg-ramoops-0").write_text("kexec-kho-canary-old")
    dirs = [str(tmp_path / "fs"), str(tmp_path / "archive"), str(tmp_path / "absent")]
    assert FA.pstore_search(dirs, ["kexec-kho-canary-web-1-1795.5-42", "kexec-kho-canary-old", "never"]) == [
        "kexec-kho-canary-old", "kexec-kho-canary-web-1-1795.5-42"]
    assert FA.pstore_search(dirs, ["kexec-kho-canary-old"], max_files=1) in ([], ["kexec-kho-canary-old"])
    assert FA.pstore_search(dirs, ["canary-web-1"], max_bytes=4) == []  # read no further than the bound

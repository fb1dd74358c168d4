"""What a target kernel reads (from its image), and whether it reads what the running kernel hands over."""

from __future__ import annotations

import kimage
import pytest
import simtree
from hypothesis import given, settings
from hypothesis import strategies as st

from ansible_collections.kexec.kho.plugins.module_utils._kho import compat, host, image
from ansible_collections.kexec.kho.plugins.plugin_utils import _handover

CONFIG = "CONFIG_KEXEC_HANDOVER=y\nCONFIG_LIVEUPDATE=y\n# CONFIG_LIVEUPDATE_MEMFD is not set\n"


def write(tmp_path, name="vmlinuz", **kw):
    path = tmp_path / name
    path.write_bytes(kimage.bzimage(**kw))
    return str(path)


@pytest.mark.parametrize("compression", ["xz", "gzip"])
def test_an_image_says_its_release_formats_and_parameters(tmp_path, compression):
    rec = image.inspect(write(tmp_path, compression=compression, config=CONFIG))
    assert rec["readable"] and rec["compression"] == compression and rec["release"] == "7.3.4"
    assert rec["compatibles"] == sorted(kimage.LAB_TOKENS) and rec["params"] == ["kho_scratch"]
    assert rec["config"] == {"CONFIG_KEXEC_HANDOVER": "y", "CONFIG_LIVEUPDATE": "y", "CONFIG_LIVEUPDATE_MEMFD": "n"}
    assert rec["config_source"] == "embedded"


def test_an_image_the_host_cannot_read_is_unknown_with_its_release_and_boot_config(tmp_path):
    (tmp_path / "config-7.4.0").write_text(CONFIG)
    rec = image.inspect(write(tmp_path, release="7.4.0", compression="lz4"), boot=str(tmp_path))
    assert not rec["readable"] and "not gzip, xz or zstd" in rec["why"] and rec["release"] == "7.4.0"
    assert rec["config"]["CONFIG_LIVEUPDATE_MEMFD"] == "n" and rec["config_source"].endswith("config-7.4.0")
    assert image.scratch_spelling(rec) == "kho_bootmem"  # from the release: 7.4 renamed it


@pytest.mark.parametrize("data, why", [(b"MZ" + b"\0" * 600, "no HdrS"), (b"\0" * 0x202 + b"HdrS", "too short")])
def test_what_is_not_a_bzimage_is_unknown_never_an_error(tmp_path, data, why):
    (tmp_path / "x").write_bytes(data)
    rec = image.inspect(str(tmp_path / "x"))
    assert not rec["readable"] and why in rec["why"]


def test_the_scratch_spelling_is_the_one_the_next_kernel_parses(tmp_path):
    assert image.scratch_spelling(image.inspect(write(tmp_path, params=("kho", "kho_bootmem")))) == "kho_bootmem"
    assert image.scratch_spelling(image.inspect(write(tmp_path))) == "kho_scratch"
    assert image.scratch_spelling({"readable": False, "release": "7.3.4"}) == "kho_scratch"
    assert image.scratch_spelling({"readable": False, "release": None}) is None


def test_the_newest_kernel_in_boot_is_the_next_one(tmp_path):
    for rel in ("7.3.4", "7.10.1", "7.4.0-rc3"):
        (tmp_path / f"vmlinuz-{rel}").write_bytes(b"x")
    assert image.newest_in_boot(str(tmp_path)).endswith("vmlinuz-7.10.1")
    assert image.newest_in_boot(str(tmp_path / "none")) is None


def test_composite_compatibles_are_lists_of_tokens():
    assert image.compatible_tokens("kho-v4;radix-v1") == ["kho-v4", "radix-v1"]
    assert _handover.root_version("radix-v1;kho-v4") == 4 and _handover.root_version("kho-v9") is None
    found = image.TOKEN.findall(b"\0kho-v4;radix-v1\0xx\0luo-v5;block-v1\0memfd-v2\0notkho-v3\0")
    assert found == [b"kho-v4", b"luo-v5", b"memfd-v2"]


@pytest.fixture
def running(tmp_path):
    opts = simtree.build("live-cold", tmp_path / "host")
    return host.KhoHost(opts["debugfs_root"], opts["sysfs_root"], opts["procfs_root"], opts["devfs_root"])


SESSIONS = {"sessions": [{"name": "kexec_simple_state", "pid": 167}]}


def test_what_the_running_kernel_hands_over_is_read_from_its_blobs(running, tmp_path):
    needed = compat.handed_over(running, None, write(tmp_path, "running"))
    assert needed["memblock"] == "memblock-v1" and needed["reserve-mem"] == "reserve-mem-v1" and needed["kho"] == "kho-v4"
    assert "memfd" not in needed
    assert compat.handed_over(running, SESSIONS, write(tmp_path, "running"))["memfd"] == "memfd-v2"


@pytest.mark.parametrize("tokens, missing", [
    (kimage.LAB_TOKENS, []),
    (("kho-v4", "memblock-v1", "reserve-mem-v1", "luo-v5"), ["memfd-v2"]),
    (("kho-v4", "memblock-v1", "reserve-mem-v1"), ["memfd-v2"]),
    (("kho-v3", "memblock-v1", "reserve-mem-v1", "luo-v5", "memfd-v2"), ["kho-v4"]),
])
def test_a_target_lacking_what_is_handed_over_is_refused_naming_it(running, tmp_path, tokens, missing):
    needed = compat.handed_over(running, SESSIONS, write(tmp_path, "running"))
    support = compat.check(needed, image.inspect(write(tmp_path, "target", tokens=tokens)), True)
    assert support["missing"] == missing and support["status"] == ("incompatible" if missing else "compatible")
    why = compat.refusal(support, True, "refuse")
    assert (why is None) == (not missing)
    if missing:
        assert missing[0] in why and "target_check: report" in why and support["consequences"]
        assert compat.refusal(support, True, "report") is None


def test_an_unreadable_target_is_unknown_refused_only_where_sessions_are_held(running, tmp_path):
    needed = compat.handed_over(running, None, write(tmp_path, "running"))
    support = compat.check(needed, image.inspect(write(tmp_path, "target", compression="lz4")), False)
    assert support["status"] == "unknown" and compat.refusal(support, False, "refuse") is None
    assert "LUO sessions are held" in compat.refusal(compat.check(needed, image.inspect(
        write(tmp_path, "target", compression="lz4")), True), True, "refuse")


def test_an_unreadable_target_whose_config_lacks_a_handler_is_incompatible(running, tmp_path):
    (tmp_path / "config-7.3.4").write_text(CONFIG)
    needed = compat.handed_over(running, SESSIONS, write(tmp_path, "running"))
    target = image.inspect(write(tmp_path, "target", compression="lz4"), boot=str(tmp_path))
    support = compat.check(needed, target, True)
    assert support["status"] == "incompatible" and support["missing"] == ["memfd-v2"]


def test_an_rc_comes_before_its_final_release(tmp_path):
    for rel in ("7.4.0-rc3", "7.4.0", "7.3.4"):
        (tmp_path / f"vmlinuz-{rel}").write_bytes(b"x")
    assert image.newest_in_boot(str(tmp_path)).endswith("vmlinuz-7.4.0")


def test_the_luo_entry_is_handed_over_only_where_something_rides_on_it(running, tmp_path, fixtures):
    luo = fixtures / "liveupdate" / "out_sub_fdts_LUO"
    (tmp_path / "host" / "debug" / "kho" / "out" / "sub_fdts" / "LUO").write_bytes(luo.read_bytes())
    no_luo = write(tmp_path, "target", tokens=("kho-v4", "memblock-v1", "reserve-mem-v1"))
    quiet = compat.handed_over(running, {"sessions": []}, write(tmp_path, "running"))
    assert "luo" not in quiet and compat.check(quiet, image.inspect(no_luo), False)["status"] == "compatible"
    held = compat.handed_over(running, SESSIONS, write(tmp_path, "running"))
    assert held["luo"] == "luo-v5" and compat.check(held, image.inspect(no_luo), True)["missing"] == ["luo-v5", "memfd-v2"]
    units = {"systemd": {"preserving_units": [{"unit": "kho-cache.service", "fd_store": 1}]}}
    assert compat.handed_over(running, units, write(tmp_path, "running"))["luo"] == "luo-v5"


PIECES = [b"kho-v4", b"kho-v12", b"memblock-v1", b"reserve-mem-v1", b"luo-v5", b"memfd-v2", b"kho-v", b"-v3", b"x",
          b"_", b".", b"-", b"\x00", b";", b"1", b"memfd-v1234", b"xkho-v4", b"mem", b"kho"]


@given(st.lists(st.sampled_from(PIECES), max_size=40))
@settings(max_examples=400, deadline=None)
def test_the_token_scan_finds_what_the_pattern_finds_everywhere(pieces):
    """kernel_tokens tries TOKEN only where a family's name starts; the answer is findall's, for any bytes."""
    kernel = b"".join(pieces)
    assert image.kernel_tokens(kernel) == sorted({m.decode() for m in image.TOKEN.findall(kernel)})

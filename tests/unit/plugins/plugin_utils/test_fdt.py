"""The strict FDT check and the pyfdt-backed parse."""

from __future__ import annotations

import os
import shutil
import struct
import subprocess

import fdtbuild
import pytest
from simtree import FIXTURES
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ansible_collections.kexec.kho.plugins.plugin_utils import _fdt

SAMPLE = fdtbuild.build({"props": {"compatible": fdtbuild.s("x-v1"), "n": fdtbuild.u32(7)},
                         "nodes": {"a": {"props": {"flag": b""}}, "b": {"nodes": {"c": {}}}}})


def test_parse_gives_raw_bytes_and_nesting():
    tree = _fdt.parse(SAMPLE)
    assert tree["properties"] == {"compatible": b"x-v1\0", "n": b"\x07\0\0\0"}
    assert tree["nodes"]["a"]["properties"] == {"flag": b""}
    assert tree["nodes"]["b"]["nodes"] == {"c": {"properties": {}, "nodes": {}}}
    assert _fdt.readable(tree)["properties"] == {"compatible": "x-v1", "n": 7}
    assert _fdt.readable(tree, "big")["properties"]["n"] == 7 << 24


def test_agrees_with_dtc(tmp_path):
    """Against the reference implementation.  Where the unit prerequisite could install dtc (make units, root on
    Debian: KHO_REQUIRE_DTC), its absence fails; elsewhere the test says skipped, and why."""
    if not shutil.which("dtc"):
        if os.environ.get("KHO_REQUIRE_DTC"):
            pytest.fail("dtc (device-tree-compiler) is not installed, yet make's unit prerequisite should have "
                        "installed it (tests/lab/lab.py install device-tree-compiler)")
        pytest.skip("dtc (device-tree-compiler) is not installed: the FDT cross-check needs it")
    src = tmp_path / "t.dts"
    src.write_text('/dts-v1/;\n/ { compatible = "a", "b"; cells = <1 2 3>; bytes = [01 02 03]; '
                   'empty; child@1 { v = /bits/ 64 <0x1122334455667788>; }; };\n')
    blob = subprocess.run(["dtc", "-I", "dts", "-O", "dtb", str(src)], check=True, capture_output=True).stdout
    tree = _fdt.readable(_fdt.parse(blob), "big")
    assert tree["properties"] == {"compatible": ["a", "b"], "cells": [1, 2, 3], "bytes": "0x010203", "empty": True}
    assert tree["nodes"]["child@1"]["properties"]["v"] == 0x1122334455667788
    # and our own writer produces what dtc parses back
    (tmp_path / "ours.dtb").write_bytes(SAMPLE)
    dts = subprocess.run(["dtc", "-I", "dtb", "-O", "dts", str(tmp_path / "ours.dtb")],
                         check=True, capture_output=True, text=True).stdout
    assert 'compatible = "x-v1";' in dts and "c {" in dts


def _patch(blob: bytes, offset: int, fmt: str, *values) -> bytes:
    b = bytearray(blob)
    struct.pack_into(fmt, b, offset, *values)
    return bytes(b)


@pytest.mark.parametrize(("blob", "message"), [
    (b"", "shorter than an FDT header"),
    (_patch(SAMPLE, 0, ">I", 0x12345678), "bad magic"),
    (SAMPLE[:-10], "truncated: header totalsize"),
    (_patch(SAMPLE, 4, ">I", 0xFFFFFFF0), "truncated: header totalsize 4294967280"),
    (_patch(SAMPLE, 20, ">I", 15), "unsupported version"),
    (_patch(SAMPLE, 8, ">I", 4000), "structure block"),
    (_patch(SAMPLE, 12, ">I", 4000), "strings block"),
    (_patch(SAMPLE, 16, ">I", len(SAMPLE) - 8), "memory reservation map"),
    (_patch(SAMPLE, 56, ">I", 7), "unknown structure tag 0x7"),
    (_patch(SAMPLE, 56, ">I", 2), "FDT_END_NODE without an open node"),
    (_patch(SAMPLE, 56, ">I", 3), "property outside any node"),
])
def test_check_rejects(blob, message):
    with pytest.raises(_fdt.FdtError, match=message):
        _fdt.check(blob)


def test_property_name_offset_out_of_bounds():
    # first property header follows the root's BEGIN_NODE (4) and its empty name (4)
    prop = 56 + 8
    assert struct.unpack_from(">I", SAMPLE, prop)[0] == 3
    with pytest.raises(_fdt.FdtError, match="name offset"):
        _fdt.check(_patch(SAMPLE, prop + 8, ">I", 10_000))
    with pytest.raises(_fdt.FdtError, match="runs past the structure block"):
        _fdt.check(_patch(SAMPLE, prop + 4, ">I", 1 << 30))


def _nest(depth: int) -> dict:
    """A tree whose deepest node is at ``depth`` (the root counts as 1)."""
    tree: dict = {}
    for _level in range(depth - 1):
        tree = {"nodes": {"n": tree}}
    return tree


def test_depth_limit_and_duplicates():
    _fdt.check(fdtbuild.build(_nest(_fdt.MAX_DEPTH)))
    with pytest.raises(_fdt.FdtError, match="nesting deeper"):
        _fdt.check(fdtbuild.build(_nest(_fdt.MAX_DEPTH + 1)))
    dup = fdtbuild.build({"nodes": {"same": {}, "sam_": {}}}).replace(b"sam_", b"same")
    with pytest.raises(_fdt.FdtError, match="duplicate"):
        _fdt.check(dup)


def test_no_fdt_end():
    blob = SAMPLE.replace(struct.pack(">I", 9), struct.pack(">I", 4))  # FDT_END -> NOP
    with pytest.raises(_fdt.FdtError, match="without FDT_END"):
        _fdt.check(blob)


def test_non_printable_names_rejected():
    blob = fdtbuild.build({"nodes": {"ok": {}}}).replace(b"ok\0", b"o\x01\0")
    with pytest.raises(_fdt.FdtError, match="non-printable"):
        _fdt.check(blob)


def test_thousand_nodes_parse():
    tree = {"props": {"compatible": fdtbuild.s("kho-v4")},
            "nodes": {f"blob{i}": {"props": {"preserved-data": fdtbuild.u64(i)}} for i in range(1000)}}
    parsed = _fdt.parse(fdtbuild.build(tree))
    assert len(parsed["nodes"]) == 1000
    assert parsed["nodes"]["blob999"]["properties"]["preserved-data"] == fdtbuild.u64(999)


EXAMPLES = 300
# Valid blobs to mutate: random bytes almost never carry the FDT magic, so they stop at the first check.
SEEDS = [SAMPLE, fdtbuild.kho_root(4, {"memblock": (0xABC000, 294), "kexec-metadata": (0xDEF000, 73)}),
         fdtbuild.memblock({"oops": (0x3EB00000, 0x100000), "trace": (0x3E600000, 0x400000)}),
         *(path.read_bytes() for path in sorted(FIXTURES.glob("handover*/*")) if _fdt.is_fdt(path.read_bytes()))]


@st.composite
def mutated(draw) -> bytes:
    """A valid blob with a few of its bytes, words or header fields changed, words inserted or dropped, or cut.

    The magic is kept and the edits past the header are the most likely: what the parser is there for."""
    blob = bytearray(draw(st.sampled_from(SEEDS)))
    for _edit in range(draw(st.integers(1, 6))):
        pos = draw(st.integers(_fdt.HEADER.size, len(blob) - 4)) & ~3
        kind = draw(st.sampled_from(["byte", "word", "header", "insert", "drop"]))
        if kind == "byte":
            blob[pos + draw(st.integers(0, 3))] = draw(st.integers(0, 255))
        elif kind == "word":  # a structure tag, a length or a name offset
            word = st.sampled_from([0, 1, 2, 3, 4, 9, 0xFFFFFFFF]) | st.integers(0, 0xFFFFFFFF)
            blob[pos:pos + 4] = struct.pack(">I", draw(word))
        elif kind == "header":
            field = draw(st.integers(1, 9)) * 4
            blob[field:field + 4] = struct.pack(">I", draw(st.integers(0, len(blob) + 64)))
        elif kind == "insert":
            blob[pos:pos] = struct.pack(">I", draw(st.sampled_from([1, 2, 3, 4, 9])))
            struct.pack_into(">I", blob, 4, len(blob))  # totalsize: else the check stops at the header
        elif len(blob) > _fdt.HEADER.size + 8:
            del blob[pos:pos + 4]
            struct.pack_into(">I", blob, 4, len(blob))
    return bytes(blob[:draw(st.integers(0, len(blob)))] if draw(st.integers(0, 3)) == 0 else blob)


def test_seeds_are_valid():
    assert len(SEEDS) >= 6
    for seed in SEEDS:
        _fdt.readable(_fdt.parse(seed))


@settings(max_examples=EXAMPLES, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(mutated())
def test_mutated_blobs_never_escape(blob):
    try:
        _fdt.readable(_fdt.parse(blob))
    except _fdt.FdtError:
        pass

"""KHO schemas: root versions, memblock, kexec-metadata, and the facts built from raw reads."""

from __future__ import annotations

import base64
import time
import tracemalloc

import fdtbuild
import hostile
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ansible_collections.kexec.kho.plugins.plugin_utils import _fdt, _decode

OOPS = {"name": "oops", "start": 0x3EB00000, "size": 0x100000}
TRACE = {"name": "trace", "start": 0x3E600000, "size": 0x400000}


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def side_from(fixtures, directory: str, side: str) -> dict:
    raw: dict = {"fdt": None, "sub_blobs": {}}
    for f in (fixtures / directory).glob(f"{side}_*"):
        rest = f.name[len(side) + 1:]
        if rest == "fdt":
            raw["fdt"] = b64(f.read_bytes())
        elif rest.startswith("sub_fdts_"):
            raw["sub_blobs"][rest[len("sub_fdts_"):]] = b64(f.read_bytes())
    return raw


def test_real_kho_v4_incoming_tree(fixtures):
    facts, errors = _decode.decode_side(side_from(fixtures, "handover1", "in"), "in")
    assert errors == []
    assert (facts["compatible"], facts["version"], facts["known_version"]) == ("kho-v4", 4, True)
    assert facts["fdt"]["status"] == "complete"
    assert facts["reserve_mem"] == [OOPS, TRACE]
    assert facts["kexec_metadata"] == {"version": 1, "previous_release": "7.3.4", "kexec_count": 1}
    test = facts["sub_blobs"]["kho_test"]
    assert test["compatible"] == "kho-test-v1"
    assert test["tree"]["properties"]["magic"] == 0x4B484F21  # "KHO!" as stored, little-endian
    assert test["tree"]["nodes"]["data"]["properties"]["nr_folios"] == 20
    for name, rec in facts["sub_blobs"].items():
        assert rec["phys"] and rec["blob_size"] == rec["size"], name


def test_second_handover_has_no_kho_test(fixtures):
    facts, errors = _decode.decode_side(side_from(fixtures, "handover2", "in"), "in")
    assert errors == []
    assert "kho_test" not in facts["sub_blobs"]
    assert facts["kexec_metadata"]["kexec_count"] == 2
    assert facts["reserve_mem"] == [OOPS, TRACE]


def test_cold_out_fdt_is_reported_truncated_and_sub_blobs_still_decode(fixtures):
    facts, errors = _decode.decode_side(side_from(fixtures, "cold", "out"), "out")
    assert facts["fdt"]["status"] == "truncated"
    assert "totalsize 353, 233 bytes read" in facts["fdt"]["error"]
    assert errors == []  # truncation is what a cold boot exposes, not a fault
    assert facts["reserve_mem"] == [OOPS, TRACE]
    assert facts["sub_blobs"]["memblock"]["phys"] is None


@pytest.mark.parametrize("version", [1, 2, 3, 4])
def test_every_root_version(version):
    mb = fdtbuild.memblock({"pstore": (0x1000_0000, 0x20_0000)})
    md = fdtbuild.metadata("6.18.0", 3)
    root = fdtbuild.kho_root(version, {"memblock": (0xABC000, len(mb)), "kexec-metadata": (0xDEF000, len(md))})
    facts, errors = _decode.decode_side({"fdt": b64(root), "sub_blobs": {
        "memblock": b64(mb), "kexec-metadata": b64(md)}}, "in")
    assert errors == []
    assert facts["version"] == version
    assert facts["preserved_memory_map"] == 0x1970000
    assert facts["sub_blobs"]["memblock"]["phys"] == 0xABC000
    assert facts["sub_blobs"]["memblock"]["blob_size"] == (len(mb) if version >= 3 else None)
    assert facts["reserve_mem"] == [{"name": "pstore", "start": 0x1000_0000, "size": 0x20_0000}]
    assert facts["kexec_metadata"]["previous_release"] == "6.18.0"


def test_unknown_root_version_is_reported_not_fatal():
    root = fdtbuild.build({"props": {"compatible": fdtbuild.s("kho-v9")}, "nodes": {}})
    facts, errors = _decode.decode_side({"fdt": b64(root), "sub_blobs": {}}, "in")
    assert errors == []
    assert (facts["compatible"], facts["version"], facts["known_version"]) == ("kho-v9", None, False)


def test_big_endian_host():
    mb = fdtbuild.memblock({"x": (0x1234_5000, 0x1000)}, byteorder="big")
    rec = _decode.decode_blob(mb, "memblock", "big")
    assert rec["reserve_mem"] == [{"name": "x", "start": 0x1234_5000, "size": 0x1000}]
    assert _decode.decode_metadata(fdtbuild.metadata("7.1", 9, "big"), "big")["kexec_count"] == 9


@pytest.mark.parametrize(("blob", "name", "message"), [
    (fdtbuild.metadata("7.3.4", 1)[:-1], "kexec-metadata", "is 73 bytes, got 72"),
    (fdtbuild.metadata("7.3.4", 1, version=2), "kexec-metadata", "unknown kexec-metadata version 2"),
    (b"\1\0", "kexec-metadata", "too short"),
    (fdtbuild.build({"props": {"compatible": fdtbuild.s("memblock-v1")},
                     "nodes": {"r": {"props": {"compatible": fdtbuild.s("reserve-mem-v1"),
                                               "start": b"\0" * 4, "size": b"\0" * 8}}}}),
     "memblock", "'start' has 4 bytes, a u64 needs 8"),
    (fdtbuild.build({"props": {"compatible": fdtbuild.s("memblock-v1")},
                     "nodes": {"r": {"props": {"compatible": fdtbuild.s("other")}}}}),
     "memblock", "expected 'reserve-mem-v1'"),
])
def test_schema_errors(blob, name, message):
    with pytest.raises(_decode.BlobError, match=message):
        _decode.decode_blob(blob, name)


def test_binary_blob_is_size_and_hash():
    rec = _decode.decode_blob(b"\x01\x02\x03", "luo")
    assert rec["format"] == "binary" and rec["size"] == 3 and len(rec["sha256"]) == 64


def test_corrupt_blobs_become_per_blob_errors(fixtures):
    raw = side_from(fixtures, "handover1", "in")
    raw["sub_blobs"]["memblock"] = b64(b"\xd0\x0d\xfe\xed" + b"\xff" * 60)
    raw["sub_blobs"]["kexec-metadata"] = "!!! not base64"
    facts, errors = _decode.decode_side(raw, "in")
    by_blob = {e["blob"]: e["error"] for e in errors}
    assert "truncated" in by_blob["in/sub_fdts/memblock"]
    assert "not valid base64" in by_blob["in/sub_fdts/kexec-metadata"]
    assert facts["sub_blobs"]["memblock"]["error"] and facts["reserve_mem"] == []
    assert facts["sub_blobs"]["kho_test"]["compatible"] == "kho-test-v1"  # the others still decode


def test_blob_size_mismatch_is_flagged(fixtures):
    raw = side_from(fixtures, "handover1", "in")
    raw["sub_blobs"]["kexec-metadata"] = b64(fdtbuild.metadata("7.3.4", 1) + b"\0")
    _facts, errors = _decode.decode_side(raw, "in")
    assert any("blob-size 73" in e["error"] for e in errors)


def test_facts_from_raw_keeps_scalars_and_raw_on_request(fixtures):
    out = {"present": True, "finalized": None, **side_from(fixtures, "cold", "out")}
    raw = {"supported": True, "byteorder": "little", "out": out, "in": {"present": False, "fdt": None, "sub_blobs": {}}}
    facts = _decode.facts_from_raw(raw, include_raw=True)
    assert facts["supported"] is True
    assert facts["out"]["present"] and facts["out"]["finalized"] is None
    assert facts["in"]["present"] is False and facts["in"]["fdt"]["status"] == "absent"
    assert set(facts["raw"]) == {"out/fdt", "out/sub_fdts/memblock", "out/sub_fdts/kexec-metadata",
                                 "out/sub_fdts/kho_test"}
    assert "raw" not in _decode.facts_from_raw(raw)


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=200), st.sampled_from(["memblock", "kexec-metadata", "kho_test", "luo"]))
def test_any_sub_blob_decodes_or_errors(data, name):
    try:
        _decode.decode_blob(data, name)
    except (_fdt.FdtError, _decode.BlobError):
        pass


@pytest.mark.parametrize("case", sorted(hostile.CASES))
def test_hostile_blobs_are_refused_or_decoded_within_bounds(case):
    """Each hostile input ends as its case says, named by its blob; a generous bound guards against a hang
    or a blow-up (bench/controller_bench.py prints the real time and peak memory of each, for the README's table)."""
    _what, build, outcome = hostile.CASES[case]
    raw = {"fdt": None, "sub_blobs": {"x": b64(build())}}
    tracemalloc.start()
    started = time.monotonic()
    try:
        facts, errors = _decode.decode_side(raw, "in")
        seconds, peak = time.monotonic() - started, tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert ("refused" if errors else "decoded") == outcome, errors
    assert all(e["blob"] == "in/sub_fdts/x" for e in errors)
    assert seconds < 10 and peak < 300 << 20, (seconds, peak)
    if case == "one_10mb_value":
        value = facts["sub_blobs"]["x"]["tree"]["nodes"]["n0"]["properties"]["data"]
        assert value["size"] == 10 << 20 and value["head"] == "01" * 32 and len(value["sha256"]) == 64


JSON = st.recursive(st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=8),
                    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=6), inner, max_size=3),
                    max_leaves=12)
SIDE = st.fixed_dictionaries({}, optional={"fdt": JSON | st.binary(max_size=64).map(b64),
                                           "sub_blobs": JSON | st.dictionaries(st.text(max_size=8),
                                                                               JSON | st.binary(max_size=64).map(b64),
                                                                               max_size=3),
                                           "present": JSON})
RAW = st.fixed_dictionaries({}, optional={"in": SIDE | JSON, "out": SIDE | JSON, "byteorder": JSON | st.sampled_from(
    ["little", "big", "middle"]), "release": JSON})


@settings(max_examples=300, deadline=None)
@given(RAW | JSON)
def test_any_raw_facts_structure_gives_facts_and_errors_never_a_crash(raw):
    """What a broken or hostile module run could return: non-mapping sides, wrong types, missing keys."""
    facts = _decode.facts_from_raw(raw, include_raw=True)
    assert isinstance(facts["errors"], list)
    assert all(set(e) == {"blob", "error"} for e in facts["errors"])
    assert isinstance(facts["in"]["sub_blobs"], dict) and isinstance(facts["out"]["sub_blobs"], dict)

"""The decode budget per host (issue 26): what one host returned costs the controller at most 1 s and 64 MB."""

from __future__ import annotations

import base64
import time
import tracemalloc

import fdtbuild
import hostile
import pytest

from ansible_collections.kexec.kho.plugins.plugin_utils import _fdt, _decode


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def peak_mib(fn) -> float:
    tracemalloc.start()
    try:
        fn()
        return tracemalloc.get_traced_memory()[1] / 2**20
    finally:
        tracemalloc.stop()


@pytest.mark.parametrize("case", sorted(hostile.HOSTS))
def test_hostile_hosts_are_decoded_within_the_budget_or_refused(case):
    """bench/controller_bench.py prints the real figures; here, CPU time (not the clock of a loaded machine)
    with a margin."""
    _what, build, outcome = hostile.HOSTS[case]
    raw = build()
    started = time.process_time()
    facts = _decode.facts_from_raw(raw)
    seconds = time.process_time() - started
    assert ("refused" if "over_budget" in facts else "decoded") == outcome, facts["errors"][:2]
    assert seconds < 3, seconds
    assert peak_mib(lambda: _decode.facts_from_raw(raw)) < 64
    if outcome == "refused":
        assert facts["over_budget"].startswith("more than ")
        assert all(e["blob"].startswith("out/sub_fdts") for e in facts["errors"])
        assert any(facts["over_budget"] in e["error"] for e in facts["errors"])
    else:
        assert facts["errors"] == []


def test_a_real_host_has_no_over_budget_and_spends_little(fixtures):
    raw = {"supported": True, "byteorder": "little", "in": {}}
    for f in (fixtures / "handover1").glob("in_*"):
        name = f.name[len("in_"):]
        if name == "fdt":
            raw["in"]["fdt"] = b64(f.read_bytes())
        elif name.startswith("sub_fdts_"):
            raw["in"].setdefault("sub_blobs", {})[name[len("sub_fdts_"):]] = b64(f.read_bytes())
    facts = _decode.facts_from_raw(raw)
    assert "over_budget" not in facts and facts["errors"] == []
    budget = _fdt.Budget()
    for side in ("out", "in"):
        _decode.decode_side(raw.get(side), side, budget=budget)
    assert all(budget.spent[k] * 50 < limit for k, limit in budget.limits.items() if k != "blobs"), budget.spent


def test_a_charge_past_a_limit_refuses_with_the_reason_then_the_budget_stays_spent():
    budget = _fdt.Budget(tokens=10)
    budget.charge(tokens=10)
    with pytest.raises(_fdt.OverBudget, match=r"^refused: more than 10 FDT structure tokens in one host's blobs"):
        budget.charge(tokens=1)
    with pytest.raises(_fdt.OverBudget, match="not decoded: the host's decode budget is spent"):
        budget.charge()
    assert budget.exceeded.startswith("more than 10 FDT structure tokens")


def test_a_walk_that_fails_is_charged_as_far_as_it_went():
    """Issue 37: the walk's cost was charged only after a walk that passed."""
    budget = _fdt.Budget()
    with pytest.raises(_fdt.FdtError, match="unknown structure tag 0x77"):
        _fdt.parse(hostile.fails_late(5000), budget)
    assert budget.spent["tokens"] == 5002 and not budget.exceeded
    with pytest.raises(_fdt.OverBudget, match=r"^refused: more than 8,192 FDT structure tokens"):
        _fdt.parse(hostile.fails_late(5000), budget)
    assert budget.spent["tokens"] == _fdt.BUDGET["tokens"] + 1  # the second walk stopped where the budget ended


def test_both_sides_share_one_budget():
    """Each side alone fits; together they are over."""
    side = {"fdt": b64(hostile.nested((50, 50))), "sub_blobs": {}}  # 5,103 tokens
    assert _decode.decode_side(side, "in")[1] == []
    facts = _decode.facts_from_raw({"out": side, "in": side})
    assert facts["over_budget"].startswith(f"more than {_fdt.BUDGET['tokens']:,} FDT structure tokens")
    assert [e["blob"] for e in facts["errors"]] == ["in/fdt"]
    assert facts["out"]["fdt"]["status"] == "complete" and facts["in"]["fdt"]["status"] == "invalid"


def test_too_many_sub_blobs_are_refused_before_any_is_decoded():
    many = {f"blob{i}": b64(fdtbuild.metadata("7.3.4", 1)) for i in range(_fdt.BUDGET["blobs"] + 1)}
    facts = _decode.facts_from_raw({"in": {"fdt": None, "sub_blobs": many}})
    assert facts["errors"] == [{"blob": "in/sub_fdts", "error": f"refused: {facts['over_budget']}; none of the "
                                f"{len(many)} sub-blobs decoded"}]
    assert facts["in"]["sub_blobs"] == {} and facts["in"]["kexec_metadata"] is None


def test_the_total_size_of_the_blobs_is_capped():
    budget = _fdt.Budget(bytes=1000)
    _facts, errors = _decode.decode_side({"sub_blobs": {"a": b64(b"\1" * 600), "b": b64(b"\2" * 600)}}, "out",
                                         budget=budget)
    assert "more than 1,000 bytes of blobs" in errors[0]["error"]


def test_decode_blob_charges_the_budget_it_is_given():
    with pytest.raises(_fdt.OverBudget, match="more than 1,000 sibling pairs"):
        _decode.decode_blob(hostile.flat(100, b"v", b"\0\0\0\1"), "x", budget=_fdt.Budget(pairs=1000))


@pytest.mark.parametrize(("raw", "expanded"), [
    (b"\1\0\0\0" * (_fdt.MAX_VALUE // 4), True),
    (b"\1\0\0\0" * (_fdt.MAX_VALUE // 4 + 1), False),
    (b"a\0" * _fdt.MAX_STRINGS, True),
    (b"a\0" * (_fdt.MAX_STRINGS + 1), False),
])
def test_long_values_and_string_lists_are_summarised(raw, expanded):
    value = _fdt.value(raw, "little")
    assert isinstance(value, list) is expanded
    if not expanded:
        assert value == _fdt.summary(raw)


def test_long_names_are_summarised_where_they_stand():
    long_node, long_prop = "n" * 200, "p" * 100
    blob = fdtbuild.build({"props": {long_prop: b"\1" * 2000}, "nodes": {long_node: {"props": {"ok": b"x\0"}}}})
    tree = _fdt.readable(_fdt.parse(blob))
    node_key, prop_key = _fdt.shown_name(long_node), _fdt.shown_name(long_prop)
    assert node_key.startswith("n" * 32 + "... (200 bytes, sha256 ") and len(node_key) < _fdt.MAX_NAME_SHOWN + 16
    assert tree["nodes"] == {node_key: {"properties": {"ok": "x"}, "nodes": {}}}
    assert tree["properties"][prop_key]["size"] == 2000  # a long value under a long name, patched back in place
    assert _fdt.shown_name("x" * _fdt.MAX_NAME_SHOWN) == "x" * _fdt.MAX_NAME_SHOWN

"""The verdict's one home (_verdict) and the role's filter over it (kho_verdict): decided from fields only."""

from __future__ import annotations

import pytest
from ansible.errors import AnsibleFilterError
from hypothesis import given, strategies as st

from ansible_collections.kexec.kho.plugins.filter.kho import kho_verdict
from ansible_collections.kexec.kho.plugins.plugin_utils import _verdict


@pytest.mark.parametrize("fields, verdict", [
    ({}, "verified"),
    ({"check_mode": True}, "would hand over"),
    ({"verify": False}, "jumped"),
    ({"dropped": ["trace", "oops"]}, "handed over, regions dropped: trace, oops"),
    ({"failed": True}, "failed, rolled back"),
    ({"failed": True, "changed_nothing": True}, "refused, nothing changed"),
    ({"failed": True, "check_mode": True, "refusals": ["KHO is off", "", "no /boot/vmlinuz-7.3.5"]},
     "would refuse: KHO is off; no /boot/vmlinuz-7.3.5"),
    ({"failed": True, "check_mode": True, "refusals": "one reason"}, "would refuse: one reason"),
    ({"failed": True, "jumped": True, "changed_nothing": True}, "failed after the jump"),
    ({"failed": True, "jumped": True, "way_back": "returned to 7.3.4: the new kernel 7.2.13 failed at test_command"},
     "returned to 7.3.4: the new kernel 7.2.13 failed at test_command"),
    ({"failed": "True", "jumped": "False", "changed_nothing": "true"}, "refused, nothing changed"),  # 2.16's text
])
def test_the_verdict_from_fields(fields, verdict):
    assert kho_verdict(fields) == verdict


def test_a_field_that_is_no_boolean_is_refused_naming_it():
    with pytest.raises(AnsibleFilterError, match="kho_verdict: .*'maybe'"):
        kho_verdict({"failed": "maybe"})


@given(st.booleans(), st.booleans(), st.lists(st.text(max_size=5), max_size=3), st.booleans(),
       st.one_of(st.none(), st.just(""), st.just(_verdict.FAILED_AFTER_RETURN)))
def test_a_failed_run_is_never_verified_nor_would_hand_over(check_mode, jumped, refusals, nothing, way_back):
    got = _verdict.failed(check_mode, jumped, way_back, refusals, nothing)
    assert got not in (_verdict.VERIFIED, _verdict.WOULD_HAND_OVER, _verdict.JUMPED) and not _verdict.ok(got)


def test_a_stage_is_staged_never_verified():
    assert _verdict.passed(False, True, (), staged=True) == _verdict.STAGED
    assert _verdict.passed(True, True, (), staged=True) == _verdict.WOULD_STAGE


def test_the_rollout_stops_once_the_failures_exceed_the_share():
    ok, bad = {"failed_step": None}, {"failed_step": "switch"}
    assert _verdict.rollout_stopped({"a": ok, "b": ok, "c": ok, "d": ok}, 0) == ""
    stopped = _verdict.rollout_stopped({"a": bad, "b": ok, "c": ok, "d": ok}, 0)
    assert stopped.startswith("1 of 4 hosts failed (a)") and "kho_max_fail_percentage=0" in stopped
    assert _verdict.rollout_stopped({"a": bad, "b": ok, "c": ok, "d": ok}, 25) == ""  # 25 % may fail: not more
    assert _verdict.rollout_stopped({"a": None, "b": ok}, 49).startswith("1 of 2")  # no result: never got through

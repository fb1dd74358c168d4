"""plugin_utils/_result.py: kho_handover_result from the role's facts, decided in Python (the role's summary.yml calls
it through the filter kho_handover_result; tests/unit/roles/test_summary_shape.py runs that for real)."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from ansible_collections.kexec.kho.plugins.filter.kho_report import kho_handover_result
from ansible_collections.kexec.kho.plugins.plugin_utils import _report, _result

BEFORE = {"release": "7.3.4", "boot_id": "11111111-2222-3333-4444-555555555555", "enabled": False,
          "interface": "finalize", "out": {"reserve_mem": [{"name": "oops"}, {"name": "trace"}, "hostile"]}}
PREFLIGHT = {"kernel": "/boot/vmlinuz-7.3.5", "initrd": "", "cmdline": "root=/dev/vda kho=on", "argv": ["kexec", "-s"],
             "method": "kexec", "target": {"status": "compatible", "target_release": "7.3.5"}}


def test_a_dry_run_says_its_plan_from_what_preflight_resolved():
    r = _result.record({"host": "web-1", "verdict": "would hand over", "before": BEFORE, "preflight": PREFLIGHT,
                        "read": {"lock": {"path": "/run/kexec-kho/handover.lock"}}, "check_mode": True,
                        "settings": {"kernel": "/boot/ignored", "method": "auto", "finalize": "true", "canary": "False"}},
                       now=0.0)
    assert r["plan"] == {"kernel": "/boot/vmlinuz-7.3.5", "initrd": None, "cmdline": "root=/dev/vda kho=on",
                         "argv": ["kexec", "-s"], "method": "kexec", "finalize": True, "enable_and_reboot_first": True,
                         "lock": "/run/kexec-kho/handover.lock", "canary": False, "regions": ["oops", "trace"],
                         "target": {"status": "compatible", "target_release": "7.3.5"}}, r["plan"]
    assert (r["target_release"], r["target_support"], r["release_before"]) == ("7.3.5", "compatible", "7.3.4")
    assert _result.record({"preflight": PREFLIGHT}, now=0.0)["plan"] is None  # a real run has no plan


def test_the_settings_name_the_kernel_where_nothing_was_resolved():
    r = _result.record({"check_mode": True, "settings": {"kernel": "/boot/vmlinuz-7.3.5", "method": "auto"}}, now=0.0)
    assert (r["plan"]["kernel"], r["plan"]["method"], r["plan"]["regions"]) == ("/boot/vmlinuz-7.3.5", "auto", [])


def test_the_clock_marks_are_the_timings_and_an_unstopped_clock_ends_now():
    jump = {"elapsed": 30.5, "phases": {"load": 6.0, "to_answer": 24.0}, "downtime": 25.48}
    r = kho_handover_result({"times": {"start": "100.0", "load": "109.5", "verify": "140.0", "end": "141.25"},
                             "jump": jump}, 0)
    assert r["timings"]["preflight"] == 9.5 and r["timings"]["verify"] == 1.25 and r["timings"]["total"] == 41.25
    assert r["timings"]["load"] == 6.0 and r["timings"]["to_gone"] is None and r["downtime"] == 25.48
    assert _result.record({"times": {"start": 100.0}}, now=160.0)["timings"]["total"] == 60.0
    assert _result.record({"times": {"load": 109.5}}, now=160.0)["timings"]["preflight"] is None  # no start: unknown


def test_a_host_the_way_back_took_home_is_where_it_is_now():
    jump = {"boot_id_after": "aaaaaaaa-bbbb-cccc-dddd-eeeeeeeeeeee"}
    home = {"returned": True, "returned_to": "7.3.4", "failed_release": "7.2.13",
            "back": {"boot_id_after": "99999999-8888-7777-6666-555555555555"}}
    assert _result.where_now({"jump": jump, "way_back": home, "after": {"release": "7.2.13"}}) == \
        ("7.3.4", "99999999-8888-7777-6666-555555555555")
    assert _result.where_now({"jump": jump, "way_back": {**home, "returned": False}, "after": {"release": "7.2.13"}}) \
        == ("7.2.13", "aaaaaaaa-bbbb-cccc-dddd-eeeeeeeeeeee")


@settings(max_examples=200, deadline=None)
@given(st.dictionaries(st.sampled_from(_result.FACTS), st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=5),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner, max_size=3), max_leaves=10)))
def test_any_facts_give_the_one_shape(facts):
    r = _result.record(facts, now=1.0)
    assert set(_report.STRINGS) <= set(r) and r == _report.normalise(r)

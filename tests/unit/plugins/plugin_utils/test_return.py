"""The way back, decided on the controller (plugin_utils/_return.py, #36): when a host whose new kernel failed a check
is handed back, what the verdict says (never 'verified'), the old kernel's word that the return came home, and what a
host that returned by itself left to say so.  Pure functions over recorded 7.3.4 trees."""

from __future__ import annotations

import copy

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from wayback import BACK_BOOT, MID_BOOT, NO_WAY, OLD_BOOT, RUN, WAY  # pylint: disable=import-error
from wayback import before_fixture, home_fixture  # noqa: F401  pylint: disable=import-error,unused-import

from ansible_collections.kexec.kho.plugins.module_utils._kho import self_return
from ansible_collections.kexec.kho.plugins.plugin_utils import _return as R


def state(**kw) -> R.AfterJump:
    return R.AfterJump(**{"jumped": True, "failed": R.TEST_COMMAND, "answers": True, "way_back": WAY,
                          "new_release": "7.2.13", **kw})


# ---------------------------------------------------------------- when to return

def test_a_failed_check_on_a_host_that_answers_with_a_way_back_returns():
    decision = R.decide(state())
    assert decision.go is True and "handing the host back to 7.3.4 (/boot/vmlinuz-7.3.4)" in decision.why


@pytest.mark.parametrize(("kw", "why"), [
    ({"failed": None}, "every check passed"),
    ({"policy": R.NEVER}, "the return policy is never"),
    ({"answers": False}, "does not answer on it: the controller cannot hand it back"),
    ({"way_back": NO_WAY}, "no way back was recorded: the running kernel 7.3.4 is not on disk"),
    ({"way_back": None}, "its answer was lost"),
    ({"way_back": {**WAY, "possible": "yes"}}, "no way back was recorded"),  # only true is true
    ({"jumped": False}, "the host did not jump"),
    ({"jumped": None}, "whether the host jumped is unknown"),
    ({"failed": R.VERIFICATION, "received": False, "answered_release": "7.3.4"}, "a cold boot: the new kernel never"),
])
def test_no_return_where_there_is_nothing_to_return_from_or_no_way(kw, why):
    decision = R.decide(state(**kw))
    assert decision.go is False and why in decision.why


@pytest.mark.parametrize("check", R.CHECKS)
def test_every_check_the_new_kernel_can_fail_returns(check):
    assert R.decide(state(failed=check)).go is True


@pytest.mark.parametrize("kw", [{"policy": "always"}, {"failed": "verify"}])
def test_an_unknown_policy_or_check_is_an_error_not_a_guess(kw):
    with pytest.raises(ValueError):
        R.decide(state(**kw))


def test_the_facts_come_from_kho_kexecs_result():
    result = {"jumped": True, "way_back": WAY, "load": {"target": {"target_release": "7.2.13", "status": "compatible"}}}
    after = R.from_result(result, R.VERIFICATION, answers=True)
    assert after == state(failed=R.VERIFICATION)
    assert R.from_result({"jumped": None}, R.TEST_COMMAND, False).way_back is None
    assert R.from_result("not a dict", None, False).jumped is None
    cold = R.from_result({**result, "handover_received": False, "ansible_facts": {"kho": {"release": "7.3.4"}}},
                         R.VERIFICATION, answers=True)
    assert (cold.received, cold.answered_release) == (False, "7.3.4") and R.decide(cold).go is False


@pytest.mark.parametrize("kw", [{"received": False, "answered_release": "7.2.13"},  # the new kernel, without KHO
                                {"received": False, "answered_release": None},  # its facts were not read
                                {"received": True, "answered_release": "7.3.4"}])  # a handover received
def test_only_the_old_release_on_a_boot_without_a_handover_is_home_already(kw):
    assert R.decide(state(failed=R.VERIFICATION, **kw)).go is True


# ---------------------------------------------------------------- what the verdict says

def test_a_return_that_came_home_names_both_kernels_and_the_check():
    assert R.verdict(state(), R.decide(state()), returned=True) == \
        "returned to 7.3.4: the new kernel 7.2.13 failed at test_command"


def test_a_return_that_did_not_come_home_says_so():
    assert R.verdict(state(), R.decide(state()), returned=False) == R.FAILED_AFTER_RETURN
    assert R.verdict(state(), R.decide(state()), returned=None) == "failed after the jump and the return"


def test_no_return_made_is_the_old_verdict():
    s = state(policy=R.NEVER)
    assert R.verdict(s, R.decide(s), returned=True) == R.FAILED_AFTER_JUMP


def test_nothing_failed_is_not_this_verdicts_to_say():
    with pytest.raises(ValueError):
        R.verdict(state(failed=None), R.decide(state(failed=None)))


@settings(max_examples=300, deadline=None)
@given(jumped=st.sampled_from([True, False, None]), failed=st.sampled_from(R.CHECKS), answers=st.booleans(),
       way=st.sampled_from([WAY, NO_WAY, None]), policy=st.sampled_from(R.POLICIES),
       returned=st.sampled_from([True, False, None]), new=st.sampled_from(["7.2.13", None]))
def test_a_failed_check_is_never_verified_whatever_happens_after(jumped, failed, answers, way, policy, returned, new):
    s = R.AfterJump(jumped, failed, answers, way, policy, new)
    decision = R.decide(s)
    text = R.verdict(s, decision, returned)
    assert text != R.VERIFIED and "verified" not in text
    assert text in (R.FAILED_AFTER_JUMP, R.FAILED_AFTER_RETURN) or text.startswith("returned to 7.3.4: ")
    assert decision.go == (jumped is True and answers and way is WAY and policy == R.ON_FAILURE)


# ---------------------------------------------------------------- the old kernel's word that it came home

def test_a_return_that_came_home_passes_every_check(before, home):
    back = R.return_checks(before, home, "7.2.13", MID_BOOT)
    assert back["failures"] == [] and back["unconfirmed"] == [] and back["taken"]["kept"] == ["oops", "trace"]


@pytest.mark.parametrize(("change", "failure"), [
    (lambda h: h.update(release="7.2.13"), "the host is on 7.2.13, not the old kernel 7.3.4"),
    (lambda h: h.update(boot_id=MID_BOOT), f"the host is on boot {MID_BOOT}, not a new one"),
    (lambda h: h.update(boot_id=None), "not a new one"),
    (lambda h: h["in"].update(present=False), "received no handover data: the return did not carry KHO"),
    (lambda h: h["in"]["kexec_metadata"].update(previous_release="7.3.4"), "expected previous release 7.2.13"),
    (lambda h: h["in"]["kexec_metadata"].update(kexec_count=3), "and count 2"),
    (lambda h: h["in"].update(kexec_metadata=None), "kexec-metadata None"),
    (lambda h: h.update(log=[x for x in h["log"] if "'trace'" not in x], reserve_mem_param=["oops"],
                        out={**h["out"], "reserve_mem": h["out"]["reserve_mem"][:1]}),
     "not taken up again by the old kernel: trace"),
])
def test_each_way_a_return_can_fail_to_come_home_is_named(before, home, change, failure):
    change(home)
    assert any(failure in f for f in R.return_checks(before, home, "7.2.13", MID_BOOT)["failures"])


def test_the_count_goes_up_by_two_from_what_the_old_kernel_had(before, home):
    before = {**before, "in": {"present": True, "kexec_metadata": {"previous_release": "7.3.4", "kexec_count": 4}}}
    home["in"]["kexec_metadata"]["kexec_count"] = 6
    assert R.return_checks(before, home, "7.2.13")["failures"] == []


def test_an_old_kernel_without_kexec_metadata_is_unconfirmed_not_passed(before, home):
    before["out"]["kexec_metadata"] = None
    home["in"]["kexec_metadata"] = None
    back = R.return_checks(before, home, "7.2.13")
    assert back["failures"] == [] and back["unconfirmed"] == ["the old kernel has no kexec-metadata: where it came "
                                                              "from is not told"]


def test_the_outcome_carries_both_halves(before, home):
    s = state()
    back = R.return_checks(before, home, "7.2.13", MID_BOOT)
    out = R.outcome(s, R.decide(s), "the host is back on a new boot, but the test command failed: no sshd", back)
    assert out["verdict"] == "returned to 7.3.4: the new kernel 7.2.13 failed at test_command"
    assert out["returned"] is True and out["returned_to"] == "7.3.4" and out["failed_release"] == "7.2.13"
    assert out["failure"].endswith("no sshd") and out["return"] is back
    bad = copy.deepcopy(home)
    bad["in"]["present"] = False
    failed = R.outcome(s, R.decide(s), "x", R.return_checks(before, bad, "7.2.13", MID_BOOT))
    assert failed["verdict"] == R.FAILED_AFTER_RETURN and failed["returned"] is False and failed["returned_to"] is None
    assert R.outcome(s, R.decide(s), "x", None)["verdict"] == R.FAILED_AFTER_RETURN  # it never came back


# ---------------------------------------------------------------- a host that returned by itself

def note(state_words="returning", run=RUN, old=OLD_BOOT) -> dict:
    return self_return.parse_note(f"{run} {old} {MID_BOOT} 7.3.4 7.2.13 120 {state_words}")


def test_a_host_that_returned_by_itself_says_so_in_the_verdict(before, home):
    seen = R.by_host(note(), RUN, OLD_BOOT, BACK_BOOT, "7.3.4", R.return_checks(before, home, "7.2.13", MID_BOOT))
    assert seen["returned"] is True and seen["verdict"] == "returned by the host: not confirmed within 120 s"


@pytest.mark.parametrize(("args", "returned", "why"), [
    ((note("load-failed 1"), BACK_BOOT, "7.3.4"), False, "stayed on 7.2.13: load-failed 1"),
    ((note("exit 255"), MID_BOOT, "7.2.13"), False, "exit 255"),
    ((note(), MID_BOOT, "7.2.13"), False, "began its return to 7.3.4 and answers on 7.2.13"),
    ((note(run="another-run"), BACK_BOOT, "7.3.4"), None, "no note of this run's return"),
    ((note(old=BACK_BOOT), BACK_BOOT, "7.3.4"), None, "no note"),
    ((None, BACK_BOOT, "7.3.4"), None, "no note"),
])
def test_a_note_that_is_not_a_return_home_is_never_called_one(args, returned, why):
    seen = R.by_host(args[0], RUN, OLD_BOOT, args[1], args[2])
    assert seen["returned"] is returned and why in seen["why"]
    assert seen["verdict"] == (None if returned is None else R.FAILED_AFTER_RETURN)


def test_a_self_return_that_landed_on_a_cold_boot_is_not_home(before, home):
    home["in"] = {"present": False}
    back = R.return_checks(before, home, "7.2.13", MID_BOOT)
    seen = R.by_host(note(), RUN, OLD_BOOT, BACK_BOOT, "7.3.4", back)
    assert seen["returned"] is False and seen["verdict"] == R.FAILED_AFTER_RETURN and "did not carry KHO" in seen["why"]

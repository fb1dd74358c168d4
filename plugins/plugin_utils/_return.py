# Copyright (c) kexec.kho contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
"""The way back, decided on the controller: whether a host whose new kernel failed a check is handed back to the old
one, what the verdict says, and whether the old kernel took the return up.  Pure functions.  Not a public API.

The facts come from kho_kexec's result (``jumped``, ``way_back``, the target's release), the role's checks (which one
failed) and the receivers' kho facts; nothing here reads a host.  The verdict's words are spelled once, in _verdict.
docs/way-back.md.
"""

from __future__ import annotations

from dataclasses import dataclass

from ansible_collections.kexec.kho.plugins.module_utils._kho import self_return
from ansible_collections.kexec.kho.plugins.plugin_utils import _receiver
from ansible_collections.kexec.kho.plugins.module_utils._kho.way_back import NEVER, ON_FAILURE, POLICIES  # noqa: F401
from ansible_collections.kexec.kho.plugins.plugin_utils import _verdict
VERIFICATION, TEST_COMMAND, LUO_CHECKS, HEALTH_GATE = "verification", "test_command", "luo_checks", "health gate"
CHECKS = (VERIFICATION, TEST_COMMAND, LUO_CHECKS, HEALTH_GATE)  # what a new kernel can fail after the jump

# The verdict's words are _verdict's (one home); the way back's are named here as it uses them.
VERIFIED, FAILED_AFTER_JUMP, FAILED_AFTER_RETURN = _verdict.VERIFIED, _verdict.FAILED_AFTER_JUMP, _verdict.FAILED_AFTER_RETURN
RETURNED, RETURNED_BY_HOST = _verdict.RETURNED, _verdict.RETURNED_BY_HOST


@dataclass(frozen=True)
class AfterJump:
    """What a run knows once its jump is over.

    ``jumped``: kho_kexec's (true, false, null); ``failed``: the check the new kernel failed (one of CHECKS), None
    where every check passed; ``answers``: the host answers on its new boot (the return needs a load there);
    ``way_back``: kho_kexec's ``way_back`` record; ``new_release``: the release the jump loaded; ``received``: the
    boot that answered received a KHO handover (kho_kexec's ``handover_received``); ``answered_release``: the release
    it runs (its facts read on arrival), None where not read."""

    jumped: bool | None
    failed: str | None
    answers: bool
    way_back: dict | None
    policy: str = ON_FAILURE
    new_release: str | None = None
    received: bool | None = None
    answered_release: str | None = None


@dataclass(frozen=True)
class Decision:
    go: bool  # hand the host back to the way back's kernel
    why: str


def from_result(result: dict, failed: str | None, answers: bool, policy: str = ON_FAILURE) -> AfterJump:
    """AfterJump from kho_kexec state=executed's result (its ``jumped``, ``way_back``, ``load.target``)."""
    result = result if isinstance(result, dict) else {}
    target = ((result.get("load") or {}).get("target") or {}) if isinstance(result.get("load"), dict) else {}
    way_back = result.get("way_back") if isinstance(result.get("way_back"), dict) else None
    facts = (result.get("ansible_facts") or {}).get("kho") if isinstance(result.get("ansible_facts"), dict) else None
    received = result.get("handover_received")
    return AfterJump(result.get("jumped"), failed, bool(answers), way_back, policy,
                     target.get("target_release") if isinstance(target, dict) else None,
                     received if isinstance(received, bool) else None,
                     facts.get("release") if isinstance(facts, dict) and isinstance(facts.get("release"), str) else None)


def decide(state: AfterJump) -> Decision:
    """Whether to return, and why (or why not); ValueError for a policy or a check that is none of the known ones."""
    if state.policy not in POLICIES:
        raise ValueError(f"the return policy is {state.policy!r}: one of {', '.join(POLICIES)}")
    if state.failed is not None and state.failed not in CHECKS:
        raise ValueError(f"the failed check is {state.failed!r}: one of {', '.join(CHECKS)}")
    if state.jumped is not True:
        return Decision(False, "the host did not jump: its rollback undoes the load, there is nothing to return from"
                        if state.jumped is False else
                        "whether the host jumped is unknown: no return is made to a kernel that is not known to run")
    if state.failed is None:
        return Decision(False, "every check passed: nothing to return from")
    if state.policy == NEVER:
        return Decision(False, f"the new kernel failed at {state.failed}, and the return policy is {NEVER}")
    if not state.answers:
        return Decision(False, f"the new kernel failed at {state.failed} and the host does not answer on it: the "
                               "controller cannot hand it back (a return armed on the host acts by itself)")
    way = state.way_back or {}
    if state.received is False and state.answered_release is not None and state.answered_release == way.get("release"):
        return Decision(False, f"the new kernel failed at {state.failed}: the host answers on its old kernel "
                               f"{state.answered_release} without a handover (a cold boot: the new kernel never came "
                               "up, or came up without KHO): it is home already, and nothing handed over survived")
    if way.get("possible") is not True:
        return Decision(False, f"the new kernel failed at {state.failed}, and no way back was recorded: "
                               f"{way.get('why') or 'the run that loaded did not say (its answer was lost)'}")
    return Decision(True, f"the new kernel failed at {state.failed}: handing the host back to {way.get('release')} "
                          f"({way.get('kernel')})")


def verdict(state: AfterJump, decision: Decision, returned: bool | None = None) -> str:
    """The verdict of a run whose new kernel failed a check: returned (``returned``: the return's receiver checks
    passed), failed after the jump and the return (it was tried and did not come home), or failed after the jump (no
    return was made).  Never VERIFIED; ValueError where nothing failed (that verdict is the role's own)."""
    if state.failed is None:
        raise ValueError("nothing failed after the jump: the verdict is the role's own")
    if not decision.go:
        return FAILED_AFTER_JUMP
    if returned:
        return RETURNED.format(old=(state.way_back or {}).get("release"), new=state.new_release or "unknown",
                               check=state.failed)
    return FAILED_AFTER_RETURN


def _side(facts: dict, name: str) -> dict:
    value = facts.get(name) if isinstance(facts, dict) else None
    return value if isinstance(value, dict) else {}


def _count(meta) -> int | None:
    value = meta.get("kexec_count") if isinstance(meta, dict) else None
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def return_checks(before: dict, after: dict, failed_release: str | None, failed_boot_id: str | None = None,
                  allowed=()) -> dict:
    """The old kernel's word that the return came home, from its facts before the first jump (``before``) and after
    the return (``after``): back on its release, on a boot that is neither of the run's others, a KHO handover
    received whose kexec-metadata names the failed release with the count two above the one it had, and every
    region it handed over revived again at the same start and size (``allowed`` may go).  ``failures`` empty: it came
    home.  A kernel with no kexec-metadata on either side is ``unconfirmed``, never a pass of that check."""
    before, after = (x if isinstance(x, dict) else {} for x in (before, after))
    failures, unconfirmed = [], []
    if after.get("release") != before.get("release"):
        failures.append(f"the host is on {after.get('release')}, not the old kernel {before.get('release')}")
    seen = {before.get("boot_id"), failed_boot_id} - {None}
    if not after.get("boot_id") or after.get("boot_id") in seen:
        failures.append(f"the host is on boot {after.get('boot_id')}, not a new one after the return")
    if not _side(after, "in").get("present"):
        failures.append("the old kernel received no handover data: the return did not carry KHO (a cold boot?)")
    meta = _side(after, "in").get("kexec_metadata")
    base = _count(_side(before, "in").get("kexec_metadata")) or 0
    if meta is None and _side(before, "out").get("kexec_metadata") is None:
        unconfirmed.append("the old kernel has no kexec-metadata: where it came from is not told")
    elif not isinstance(meta, dict) or meta.get("previous_release") != failed_release or _count(meta) != base + 2:
        failures.append(f"kexec-metadata {meta}, expected previous release {failed_release} and count {base + 2}")
    taken = _receiver.taken_up(before, after, allowed)
    if taken["lost"]:
        failures.append(f"handed over but not taken up again by the old kernel: {'; '.join(taken['lost'])}")
    return {"failures": failures, "unconfirmed": unconfirmed, "taken": taken}


def outcome(state: AfterJump, decision: Decision, failed_msg: str, back: dict | None = None) -> dict:
    """Both halves' evidence and the verdict: what the new kernel failed (``failed_msg``), the decision, and the
    return's receiver checks (``back``: return_checks' answer, None where no return was made or it never came back)."""
    returned = bool(decision.go and back is not None and not back["failures"])
    return {"verdict": verdict(state, decision, returned), "returned": returned, "failed_check": state.failed,
            "failed_release": state.new_release, "failure": failed_msg, "decision": decision.why,
            "returned_to": (state.way_back or {}).get("release") if returned else None, "return": back}


def by_host(note: dict | None, run_id: str, old_boot_id: str, boot_id: str | None, release: str | None,
            back: dict | None = None) -> dict:
    """What a host the controller reaches again after a jump it lost sight of did by itself, from its note
    (self_return.parse_note), the boot and release it answers on, and the return's receiver checks where read
    (``back``, return_checks): ``returned`` true with RETURNED_BY_HOST; false with FAILED_AFTER_RETURN where it tried
    and did not come home (the load or the jump failed, another kernel or a cold boot answers); None where the note
    is not this run's (the host did not return by itself: it was confirmed, disarmed, or never reached the new
    boot)."""
    mine = isinstance(note, dict) and note.get("run_id") == run_id and note.get("old_boot_id") == old_boot_id
    if not mine:
        return {"returned": None, "verdict": None, "why": "no note of this run's return on the host"}
    if note["state"] != self_return.STATES[0]:
        return {"returned": False, "verdict": FAILED_AFTER_RETURN,
                "why": f"the host tried to return by itself and stayed on {note['new_release']}: "
                       f"{note['state']} {note['rc']}"}
    elsewhere = boot_id not in (None, old_boot_id, note.get("new_boot_id")) and release == note["old_release"]
    if not elsewhere:
        return {"returned": False, "verdict": FAILED_AFTER_RETURN,
                "why": f"the host began its return to {note['old_release']} and answers on {release} (boot {boot_id})"}
    if back is not None and back["failures"]:
        return {"returned": False, "verdict": FAILED_AFTER_RETURN,
                "why": f"the host returned by itself, but not home: {'; '.join(back['failures'])}"}
    return {"returned": True, "verdict": RETURNED_BY_HOST.format(seconds=note["timeout"]),
            "why": f"the host returned to {note['old_release']} by itself from {note['new_release']}"}


def home_checks(back: dict, before: dict, state: AfterJump, failed_boot_id: str | None, allowed=(),
                canary: str | None = None) -> dict | None:
    """The old kernel's word after the return (return_checks, and the canary written again before it in the old
    kernel's pstore): from the return's kho_kexec answer (``back``, with facts_after).  None where the return never
    came back on a new boot with its facts read."""
    facts = (back.get("ansible_facts") or {}).get("kho") if isinstance(back.get("ansible_facts"), dict) else None
    if back.get("jumped") is not True or not back.get("facts_read") or not isinstance(facts, dict):
        return None
    checks = return_checks(before, facts, state.new_release, failed_boot_id, allowed or ())
    if canary and canary not in (back.get("pstore_found") or []):
        checks["failures"].append("the canary written again before the return is in no pstore record of the old "
                                  "kernel's new boot")
    return checks


BACK_FIELDS = ("jumped", "boot_id_after", "downtime", "failed", "msg")  # what the return's own run said, in outcome


def settle(state: AfterJump, decision: Decision, jump: dict, back: dict, before: dict, failure: str, allowed=(),
           canary: str | None = None) -> dict:
    """The verdict of a run whose new kernel failed a check, with both halves' evidence: the failed check and its
    message (``failure``), the decision, the return's kho_kexec answer (``back``, its BACK_FIELDS) and the old
    kernel's receiver checks.  One home for the role's filter and kho_kexec's own return."""
    if state.failed is None:  # the run failed after the jump without a check named: nothing decides a return
        return {"verdict": FAILED_AFTER_JUMP, "returned": False, "failed_check": None, "decision":
                "no check is named as failed: no return is decided", "returned_to": None, "return": None}
    back = back if isinstance(back, dict) else {}
    checks = home_checks(back, before, state, jump.get("boot_id_after"), allowed, canary) if decision.go else None
    out = outcome(state, decision, failure, checks)
    if decision.go:
        out["back"] = {k: back.get(k) for k in BACK_FIELDS}
    return out


def host_outcome(jump: dict, note: dict, before: dict, allowed=()) -> dict:
    """The verdict of a host that returned by itself (kho_kexec's self_return.note, this run's): the old kernel's
    receiver checks on the facts the jump read on arrival (facts_after) against its facts before the jump."""
    after = (jump.get("ansible_facts") or {}).get("kho") if isinstance(jump.get("ansible_facts"), dict) else None
    after = after if isinstance(after, dict) else {}
    checks = return_checks(before, after, note.get("new_release"), note.get("new_boot_id"), allowed or ())
    got = by_host(note, jump.get("run_id"), jump.get("boot_id_before"), jump.get("boot_id_after"),
                  after.get("release"), checks)
    return {"verdict": got["verdict"] or FAILED_AFTER_JUMP, "returned": got["returned"] is True,
            "failed_check": None, "failed_release": note.get("new_release"), "by_host": True,
            "failure": f"not confirmed within {note.get('timeout')} s of the new kernel's boot", "decision": got["why"],
            "returned_to": note.get("old_release") if got["returned"] is True else None, "return": checks,
            "note": note}

# Copyright (c) kexec.kho contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
"""The verdict of one host's handover: its words, spelled once, and the role's decision from fields.  Not a public
API.

The role (tasks/main.yml, through the kho_verdict filter), the way back (_return), the report (_report) and the
tests use these names; nothing compares a verdict against a literal of its own.  A verdict is decided from the run's
fields only, never from a message.  docs/design.md.
"""

from __future__ import annotations

VERIFIED = "verified"  # the new kernel's own word: everything handed over taken up (never said of a returned host)
JUMPED = "jumped"  # kho_handover_verify off: the host jumped, nothing was checked
DROPPED = "handed over, regions dropped: {names}"  # regions allowed to go (kho_handover_drop_regions) and gone
WOULD_HAND_OVER = "would hand over"  # a dry run that found nothing to refuse
STAGED = "staged"  # staged mode's first part: loaded while the host serves, for this run's switch
WOULD_STAGE = "would stage"  # its dry run
WOULD_REFUSE = "would refuse: {reasons}"  # a dry run: every refusal it found
REFUSED = "refused, nothing changed"  # refused before it changed anything on the host (its own lock aside)
ROLLED_BACK = "failed, rolled back"  # changed something, did not jump, undid what it did
FAILED_AFTER_JUMP = "failed after the jump"
FAILED_AFTER_RETURN = "failed after the jump and the return"
RETURNED = "returned to {old}: the new kernel {new} failed at {check}"
RETURNED_BY_HOST = "returned by the host: not confirmed within {seconds} s"


def passed(check_mode: bool, verify: bool, dropped=(), staged: bool = False) -> str:
    """The verdict of a run whose every step passed: a stage's, a dry run's, an unchecked jump's, or the receiver's
    word."""
    if staged:
        return WOULD_STAGE if check_mode else STAGED
    if check_mode:
        return WOULD_HAND_OVER
    if not verify:
        return JUMPED
    return DROPPED.format(names=", ".join(dropped)) if dropped else VERIFIED


def failed(check_mode: bool, jumped: bool, way_back: str | None = None, refusals=(), changed_nothing: bool = False) -> str:
    """The verdict of a run that failed: the way back's where it decided one (``way_back``); after a jump (or where
    whether it jumped is unknown, ``jumped`` true), failed after the jump; a dry run's refusals; else refused (nothing
    of the host's changed) or rolled back."""
    if way_back:
        return way_back
    if jumped:
        return FAILED_AFTER_JUMP
    if check_mode:
        return WOULD_REFUSE.format(reasons="; ".join(str(r) for r in refusals if r))
    return REFUSED if changed_nothing else ROLLED_BACK


def ok(verdict: str) -> bool:
    """A verdict the report shows as good: the receiver verified everything handed over."""
    return verdict == VERIFIED


def rollout_stopped(results: dict, percent) -> str:
    """Staged mode's switch: why the rollout stops (``''``: it goes on), from each target's kho_handover_result (None
    where a host has none: it never got through its stage, unreachable).  It stops once the hosts failed so far exceed
    ``percent`` of the targets, as max_fail_percentage does for a batch (0: the first failure)."""
    failed = sorted(h for h, r in results.items() if not isinstance(r, dict) or r.get("failed_step") is not None)
    if not results or len(failed) * 100 <= float(percent) * len(results):
        return ""
    return (f"{len(failed)} of {len(results)} hosts failed ({', '.join(failed[:10])}{', ...' if len(failed) > 10 else ''}), "
            f"more than kho_max_fail_percentage={float(percent):g}")

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
WOULD_REFUSE = "would refuse: {reasons}"  # a dry run: every refusal it found
REFUSED = "refused, nothing changed"  # refused before it changed anything on the host (its own lock aside)
ROLLED_BACK = "failed, rolled back"  # changed something, did not jump, undid what it did
FAILED_AFTER_JUMP = "failed after the jump"
FAILED_AFTER_RETURN = "failed after the jump and the return"
RETURNED = "returned to {old}: the new kernel {new} failed at {check}"
RETURNED_BY_HOST = "returned by the host: not confirmed within {seconds} s"


def passed(check_mode: bool, verify: bool, dropped=()) -> str:
    """The verdict of a run whose every step passed: a dry run's, an unchecked jump's, or the receiver's word."""
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

# Copyright (c) kexec.kho contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Filters: fdt_decode (a KHO blob to the structure the facts use), kho_query (jmespath), and the verifications of a
handover from the receiver's facts: kho_regions_verify, kho_liveupdate_verify, and kho_handover_checks (all of the
handover role's checks at once); the way back (docs/way-back.md): kho_return_decide and kho_return_outcome; and
kho_verdict, the role's verdict from its fields (_verdict)."""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence

from ansible.errors import AnsibleFilterError
from ansible.module_utils.parsing.convert_bool import boolean

from ansible_collections.kexec.kho.plugins.module_utils._kho import liveupdate
from ansible_collections.kexec.kho.plugins.plugin_utils import _decode, _fdt, _jump, _receiver, _return, _verdict

try:
    import jmespath
    HAS_JMESPATH = True
except ImportError:  # pragma: no cover - reported when the filter is used
    HAS_JMESPATH = False


def fdt_decode(blob, name=None, byteorder="little"):
    try:
        return _decode.decode_blob(_decode.b64decode(blob), name, byteorder)
    except (_fdt.FdtError, _decode.BlobError, ValueError) as exc:
        raise AnsibleFilterError(f"fdt_decode: {exc}") from exc


def _plain(value):
    """Ansible's tagged and unsafe types as the builtins jmespath's type checks know."""
    if isinstance(value, Mapping):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, str):
        return str.__str__(value)  # an exact str (str() keeps ansible-core 2.16's AnsibleUnsafeText as it is)
    if isinstance(value, bytes):
        return value
    if isinstance(value, bool) or value is None:
        return value
    if isinstance(value, int):
        return int(value)
    if isinstance(value, float):
        return float(value)
    if isinstance(value, Sequence):
        return [_plain(v) for v in value]
    return value


def kho_query(data, expression):
    if not HAS_JMESPATH:
        raise AnsibleFilterError("kho_query needs the jmespath library on the controller")
    try:
        return jmespath.search(str(expression), _plain(data))
    except jmespath.exceptions.JMESPathError as exc:
        raise AnsibleFilterError(f"kho_query: {expression!r}: {exc}") from exc


def kho_liveupdate_verify(before, after, method):
    before, after = _plain(before), _plain(after)
    try:
        _receiver.check_shape(before, "before")
        _receiver.check_shape(after, "after")
    except ValueError as exc:
        raise AnsibleFilterError(f"kho_liveupdate_verify takes ansible_facts.kho.liveupdate from before and after the "
                                 f"jump: {exc}") from exc
    if method not in liveupdate.METHODS[1:]:
        raise AnsibleFilterError(f"kho_liveupdate_verify: method is {method!r}, expected kexec or systemctl (as the jump "
                                 "resolved it)")
    return _receiver.verify(before, after, str(method))


def _region_list(facts: dict, path: tuple, which: str) -> None:
    side = facts.get(path[0])
    if side is not None and not isinstance(side, dict):
        raise AnsibleFilterError(f"kho_regions_verify: {which}.{path[0]} is {side!r:.80}: expected a mapping or null")
    value = (side or {}).get(path[1])
    if value is None:
        return
    good = isinstance(value, list) and all(isinstance(r, dict) and isinstance(r.get("name"), str)
                                           and all(isinstance(r.get(k), int) for k in ("start", "size")) for r in value)
    if not good:
        raise AnsibleFilterError(f"kho_regions_verify: {which}.{'.'.join(path)} is {value!r:.80}: expected a list of "
                                 "{name, start, size} as kho_facts returns it")


def kho_regions_verify(before, after, allowed=None):
    before, after = _plain(before), _plain(after)
    if not isinstance(before, dict) or not isinstance(after, dict):
        raise AnsibleFilterError("kho_regions_verify takes ansible_facts.kho from before and after the jump")
    for facts, which in ((before, "before"), (after, "after")):
        for side in ("in", "out"):
            _region_list(facts, (side, "reserve_mem"), which)
    for facts, which, key in ((before, "before", "log"), (after, "after", "log"), (after, "after", "reserve_mem_param")):
        value = facts.get(key)
        if value is not None and not (isinstance(value, list) and all(isinstance(x, str) for x in value)):
            raise AnsibleFilterError(f"kho_regions_verify: {which}.{key} is {value!r:.80}: expected a list of strings or null")
    allowed = _plain(allowed) or []
    if not isinstance(allowed, list) or not all(isinstance(x, str) for x in allowed):
        raise AnsibleFilterError(f"kho_regions_verify: the regions allowed to go are {allowed!r:.80}: expected a list of names")
    try:
        return _receiver.taken_up(before, after, allowed)
    except ValueError as exc:  # a log line in no form the kernel writes (_receiver.LogFormatError)
        raise AnsibleFilterError(f"kho_regions_verify: {exc}") from exc


RESTORE_FAILED = re.compile(r"restore failed|KHO restore fail")


def _side(facts: dict, name: str) -> dict:
    return facts.get(name) if isinstance(facts.get(name), dict) else {}


def _metadata_failure(before: dict, after: dict) -> str | None:
    """kexec-metadata names the previous release with a count one higher (where either side has it)."""
    meta_in, meta_out = _side(after, "in").get("kexec_metadata"), _side(before, "out").get("kexec_metadata")
    if meta_in is None and meta_out is None:
        return None
    count = ((_side(before, "in").get("kexec_metadata") or {}).get("kexec_count") or 0) + 1
    meta = meta_in if isinstance(meta_in, dict) else {}
    if meta.get("previous_release") == before.get("release") and meta.get("kexec_count") == count:
        return None
    return f"kexec-metadata {meta_in}, expected previous release {before.get('release')} and count {count}"


def _sessions_failure(before: dict, support, luo_checks: bool) -> str | None:
    """Sessions held before the jump went to a target known to restore them, or their workloads check them."""
    held = [s for s in (_side(before, "liveupdate").get("sessions") or []) if isinstance(s, dict) and s.get("pid") != 1]
    if not held or support == "compatible" or luo_checks:
        return None
    return (f"LUO sessions {', '.join(str(s.get('name')) for s in held)} were held, and the target kernel's support for "
            f"them was {support}: their restore is not confirmed. Give kho_handover_luo_checks that open them, or load a "
            "target that reads them")


def _region_rows(taken: dict, after: dict) -> list:
    """The region report: sent at, received at, taken up by the new kernel, ramoops attached."""
    received = {r["name"]: r["start"] for r in _side(after, "in").get("reserve_mem") or []}
    return [{"name": r["name"], "size": r["size"], "start_before": r["start"], "start_after": received.get(r["name"]),
             "revived": r["revived"], "ramoops": r.get("ramoops")} for r in taken["regions"]]


def kho_handover_checks(before, after, method=None, found=None, canary=None, support=None, allowed=None,
                        luo_checks=False):
    """Every check of the handover role's verification at once, from the receiver's facts (see its docs)."""
    before, after = _plain(before), _plain(after)
    taken = kho_regions_verify(before, after, allowed)
    lu = (kho_liveupdate_verify(before["liveupdate"], after.get("liveupdate"), method)
          if _side(before, "liveupdate").get("device") else None)
    sent, received = _side(before, "out").get("reserve_mem"), _side(after, "in").get("reserve_mem")
    failed_lines = [x for x in after.get("log") or [] if RESTORE_FAILED.search(x)]
    checks = [
        (not _side(after, "in").get("present") or received != sent,
         f"reserve_mem regions before the jump {sent}, after it {received}"),
        (taken["lost"], f"handed over but not taken up by the new kernel: {'; '.join(taken['lost'])}"),
        (not _side(after, "in").get("known_version"),
         f"unknown incoming root compatible {_side(after, 'in').get('compatible')}"),
        (True, _metadata_failure(before, after)),
        (failed_lines, f"a producer reported a failed restore: {failed_lines}"),
        (lu and lu["lost"], f"live update state was lost: {'; '.join((lu or {}).get('lost') or [])}"),
        (True, _sessions_failure(before, support, bool(luo_checks))),
        (canary and canary not in (found or []),
         "the canary written through /dev/pmsg0 before the jump is in no pstore record of the new boot"
         + (f": the new kernel did not attach ramoops to {', '.join(taken['ramoops_detached'])}"
            if taken["ramoops_detached"] else "")),
    ]
    return {"failures": [msg for bad, msg in checks if bad and msg], "taken": taken, "liveupdate": lu,
            "regions": _region_rows(taken, after)}


def _after_jump(name, jump, failed, answers, policy):
    """The way back's input, from kho_kexec's result and the check the role saw fail ('' or None: none named)."""
    failed = str(failed) if failed and str(failed).lower() not in ("none", "null") else None  # 2.16: "" or "None"
    try:
        state = _return.from_result(_plain(jump), failed, boolean(_plain(answers), strict=True), str(policy))
        return state, _return.decide(state)
    except (TypeError, ValueError) as exc:
        raise AnsibleFilterError(f"{name}: {exc}") from exc


def kho_return_decide(jump, failed=None, answers=True, policy=_return.ON_FAILURE):
    """Whether a host whose new kernel failed a check is handed back to its old kernel, and why (or why not)."""
    state, decision = _after_jump("kho_return_decide", jump, failed, answers, policy)
    return {"go": decision.go, "why": decision.why, "failed_check": state.failed, "way_back": state.way_back}


def kho_return_outcome(jump, back=None, before=None, failed=None, failure="", answers=True,
                       policy=_return.ON_FAILURE, allowed=None, canary=None, note=None):
    """The verdict of a run whose new kernel failed a check, with both halves' evidence: the failed check and its
    message, the decision, the return's kho_kexec answer (``back``) and the old kernel's receiver checks.  ``note``:
    the host's note of a return it made by itself where it was read after the jump (a disarm, a late confirm);
    else the jump's own (``self_return.note``)."""
    jump, back, before = (_plain(x) if isinstance(x, Mapping) else {} for x in (jump, back, before))
    if not isinstance(note, Mapping):
        note = (jump.get("self_return") or {}).get("note") if isinstance(jump.get("self_return"), dict) else None
    note = _plain(note) if isinstance(note, Mapping) else None
    if isinstance(note, dict):  # the host returned by itself: its note and the old kernel's facts decide
        return _return.host_outcome(jump, note, before, _plain(allowed))
    state, decision = _after_jump("kho_return_outcome", jump, failed, answers, policy)
    return _return.settle(state, decision, jump, back, before, str(failure or ""), _plain(allowed), canary)


def kho_verdict(fields):
    """The handover role's verdict of one host from its fields (_verdict.passed or _verdict.failed)."""
    fields = _plain(fields) if isinstance(fields, Mapping) else {}
    defaults = {"failed": False, "check_mode": False, "verify": True, "jumped": False, "changed_nothing": False,
                "staged": False}
    try:
        flag = {k: boolean(fields.get(k, v), strict=True) for k, v in defaults.items()}
    except TypeError as exc:
        raise AnsibleFilterError(f"kho_verdict: {exc}") from exc
    if not flag["failed"]:
        return _verdict.passed(flag["check_mode"], flag["verify"], fields.get("dropped") or (), flag["staged"])
    refusals = fields.get("refusals") or ()
    return _verdict.failed(flag["check_mode"], flag["jumped"], fields.get("way_back") or None,
                           [refusals] if isinstance(refusals, str) else refusals, flag["changed_nothing"])


def kho_back_out(undo, jump=None, load=None):
    """The handover role's back-out of a host that did not jump: what it undid, in words, and whether it changed
    nothing (_jump.backed_out)."""
    return _jump.backed_out(_plain(undo) if isinstance(undo, Mapping) else {},
                            *(_plain(x) if isinstance(x, Mapping) else {} for x in (jump, load)))


def kho_rollout_stopped(hosts, hostvars, percent=0):
    """Staged mode: why the switch stops, from the targets' kho_handover_result (_verdict.rollout_stopped)."""
    if not isinstance(hosts, (list, tuple)):
        raise AnsibleFilterError(f"kho_rollout_stopped: the hosts are a list of inventory names, not {type(hosts).__name__}")
    try:
        percent = float(percent)
    except (TypeError, ValueError) as exc:
        raise AnsibleFilterError(f"kho_rollout_stopped: the percentage is {percent!r}, not a number") from exc

    def result(name):
        found = hostvars[name] if name in hostvars else {}
        return _plain(found["kho_handover_result"]) if "kho_handover_result" in found else None
    return _verdict.rollout_stopped({h: result(h) for h in hosts}, percent)


class FilterModule:
    def filters(self):
        return {"fdt_decode": fdt_decode, "kho_query": kho_query, "kho_liveupdate_verify": kho_liveupdate_verify,
                "kho_regions_verify": kho_regions_verify, "kho_handover_checks": kho_handover_checks,
                "kho_return_decide": kho_return_decide, "kho_return_outcome": kho_return_outcome,
                "kho_verdict": kho_verdict, "kho_back_out": kho_back_out,
                "kho_rollout_stopped": kho_rollout_stopped}

# Copyright (c) kexec.kho contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
"""The receiver's word, judged on the controller: which reserve_mem regions the new kernel took up, and what of the
live update state it can give back to user space.  Not a public API.

From the facts kho_facts read on each side of the jump; nothing here runs on a host.  A kernel revives a region
handed to it only when its own command line has ``reserve_mem=SIZE:ALIGN:NAME`` with the same name and size and an
alignment the old start satisfies (mm/memblock.c, reserve_mem_kho_revive); else the incoming tree still lists the
region, but its memory is ordinary free memory in the new kernel.
"""

from __future__ import annotations

import re

from ansible_collections.kexec.kho.plugins.module_utils._kho import liveupdate
from ansible_collections.kexec.kho.plugins.module_utils._kho.host import log_message
from ansible_collections.kexec.kho.plugins.module_utils._kho.regions import NAME

HEX = r"0x[0-9a-f]{1,16}"
# The new kernel's own messages (mm/memblock.c, fs/pstore/ram.c, 7.2 and 7.3), each matched whole.
REVIVED = re.compile(rf"Revived memory reservation '{NAME}' from KHO")
NOT_REVIVED = (re.compile(rf"KHO reserve-mem '{NAME}' has wrong (?:alignment \({HEX}, {HEX}\)|size \({HEX} != {HEX}\))"),
               re.compile(rf"FDT 'memblock' has no child '{NAME}': -\d{{1,4}}"),
               re.compile(rf"Node '{NAME}' is incompatible with 'reserve-mem-v1': -\d{{1,4}}"))
NONE_REVIVED = re.compile(r"failed to retrieve FDT 'memblock' from KHO: -\d{1,4}"
                          r"|FDT 'memblock' is incompatible with 'memblock-v1': -\d{1,4}")  # no region at all
RAMOOPS_SHAPE = re.compile(r"ramoops: using [^@ ]+@[^@ ]+, ecc: .*")  # not its others ("using module parameters")
RAMOOPS = re.compile(rf"ramoops: using ({HEX})@({HEX}), ecc: -?\d{{1,10}}")
RAMOOPS_FORM = "ramoops: using 0xSIZE@0xSTART, ecc: N (hex numbers of at most 16 digits)"
MAX_LINES = 4096  # log lines looked at, at most


class LogFormatError(ValueError):
    """A kernel log line that starts as one of the kernel's messages but is not in the form the kernel writes."""


# ---------------------------------------------------------------- regions

def _log_lines(log) -> list:
    """The kernel's messages, without their time stamps."""
    return [log_message(x) for x in (log or [])[:MAX_LINES]]


def _from_log(name: str, lines: list):
    """True: the new kernel logged the revival; False: it logged why not (which wins); None: it said nothing of it."""
    if any(NONE_REVIVED.fullmatch(line) for line in lines):
        return False
    if any(m and m.group(1) == name for rx in NOT_REVIVED for m in map(rx.fullmatch, lines)):
        return False
    return True if any(m and m.group(1) == name for m in map(REVIVED.fullmatch, lines)) else None


def _from_out_tree(region: dict, after: dict):
    """The new kernel's own outgoing memblock (what it would hand on), on kernels whose out/ tree is live (7.x)."""
    out = after.get("out") or {}
    if after.get("interface") != "live" or not out.get("present"):
        return None
    return any(r.get("name") == region["name"] and r.get("start") == region["start"] and r.get("size") == region["size"]
               for r in out.get("reserve_mem") or [])


def _from_param_list(name: str, after: dict):
    """memblock/reserve_mem_param lists the regions the new kernel reserved: a name missing there was not."""
    names = after.get("reserve_mem_param")
    if not isinstance(names, list):
        return None
    return None if name in names else False


def ramoops_at(line: str) -> int | None:
    """The start a kernel's "ramoops: using 0xSIZE@0xSTART, ecc: N" line names; None for another message.
    LogFormatError (a ValueError) for a line of that shape whose numbers are not in the kernel's form."""
    if not RAMOOPS_SHAPE.fullmatch(line):
        return None
    m = RAMOOPS.fullmatch(line)
    if not m:
        raise LogFormatError(f"the log line {line[:120]!r} is not in the form the kernel writes: {RAMOOPS_FORM}")
    return int(m.group(2), 16)


def _attached(region: dict, lines: list) -> bool:
    return any(ramoops_at(line) == region["start"] for line in lines)


def _region(region: dict, before: dict, after: dict, lines: list) -> dict:
    received = any(r.get("name") == region["name"] and r.get("start") == region["start"]
                   and r.get("size") == region["size"] for r in ((after.get("in") or {}).get("reserve_mem") or []))
    evidence = {"log": _from_log(region["name"], lines), "out_tree": _from_out_tree(region, after),
                "reserve_mem_param": _from_param_list(region["name"], after)}
    said = [v for v in evidence.values() if v is not None]
    revived = False if False in said else (True if said else None)
    rec = {"name": region["name"], "start": region["start"], "size": region["size"], "received": received,
           "revived": revived if received else False, "evidence": {k: v for k, v in evidence.items() if v is not None}}
    if _attached(region, _log_lines(before.get("log"))):  # the old kernel had ramoops on it
        rec["ramoops"] = _attached(region, lines)
    return rec


def _why(rec: dict) -> str:
    if not rec["received"]:
        return f"{rec['name']}: not in the incoming tree"
    if rec["revived"] is None:
        return f"{rec['name']}: the new kernel gave no record of it (no live out/ tree, no log line, no reserve_mem_param)"
    return (f"{rec['name']}: handed over but not revived by the new kernel (its command line has no reserve_mem= "
            "with that name, or another size or alignment)")


def taken_up(before: dict, after: dict, allowed=()) -> dict:
    """Each region the old kernel handed over (its out/ tree), and whether the new kernel took it up.

    ``kept``: revived at the same start and size; ``dropped``: allowed to go (``allowed``) and not revived;
    ``lost``: neither, each with why.  A region of which the new kernel says nothing is lost: unknown fails safe.
    """
    lines = _log_lines(after.get("log"))
    sent = [r for r in ((before.get("out") or {}).get("reserve_mem") or []) if isinstance(r, dict) and "name" in r]
    regions = [_region(r, before, after, lines) for r in sent]
    allowed = set(allowed or ())
    kept = [r["name"] for r in regions if r["revived"]]
    dropped = [r["name"] for r in regions if not r["revived"] and r["name"] in allowed]
    lost = [_why(r) for r in regions if not r["revived"] and r["name"] not in allowed]
    detached = [r["name"] for r in regions if r.get("ramoops") is False]
    return {"regions": regions, "kept": kept, "dropped": dropped, "lost": lost, "ramoops_detached": detached}


# ---------------------------------------------------------------- live update

def _int_or_none(value, where: str) -> None:
    if value is not None and (isinstance(value, bool) or not isinstance(value, int)):
        raise ValueError(f"{where} is {value!r}: expected a whole number or null")


def _records(value, where: str, key: str, kind) -> list:
    """A list of mappings, each with ``key`` of type ``kind`` (None allowed for ints)."""
    if value is None:
        return []
    if not isinstance(value, list) or not all(isinstance(v, dict) for v in value):
        raise ValueError(f"{where} is {value!r:.80}: expected a list of mappings")
    for i, item in enumerate(value):
        if kind is int:
            _int_or_none(item.get(key, "missing"), f"{where}[{i}].{key}")
        elif not isinstance(item.get(key), kind):
            raise ValueError(f"{where}[{i}].{key} is {item.get(key)!r:.80}: expected {kind.__name__}")
    return value


def check_shape(lu, which: str) -> None:
    """ValueError naming the first part of ``lu`` (kho_facts' liveupdate facts) that is not as kho_facts returns it."""
    if not isinstance(lu, dict):
        raise ValueError(f"{which} is {type(lu).__name__}: expected ansible_facts.kho.liveupdate (a mapping)")
    _records(lu.get("sessions"), f"{which}.sessions", "pid", int)
    _int_or_none(lu.get("incoming_number"), f"{which}.incoming_number")
    for key in ("device", "registered"):
        if lu.get(key) is not None and not isinstance(lu.get(key), bool):
            raise ValueError(f"{which}.{key} is {lu.get(key)!r:.80}: expected true, false or null")
    for part in ("systemd", "outgoing", "restore_failures"):
        if lu.get(part) is not None and not isinstance(lu.get(part), dict):
            raise ValueError(f"{which}.{part} is {lu.get(part)!r:.80}: expected a mapping or null")
    sd = lu.get("systemd") or {}
    _int_or_none(sd.get("kexec_count"), f"{which}.systemd.kexec_count")
    for i, unit in enumerate(_records(sd.get("preserving_units"), f"{which}.systemd.preserving_units", "unit", str)):
        _int_or_none(unit.get("fd_store"), f"{which}.systemd.preserving_units[{i}].fd_store")
    _int_or_none((lu.get("outgoing") or {}).get("next_number"), f"{which}.outgoing.next_number")
    for key, value in (lu.get("restore_failures") or {}).items():
        if not isinstance(value, list) or not all(isinstance(x, str) for x in value):
            raise ValueError(f"{which}.restore_failures.{key} is {value!r:.80}: expected a list of names")


def receiver_refusal(after: dict) -> str | None:
    """Why the new kernel cannot hand sessions back, in its own word: it registers /dev/liveupdate only with LUO on
    (liveupdate=on, KHO on), and the node must be there to open; None where both hold.  Unknown is a refusal."""
    if after.get("registered") is not True:
        if after.get("registered") is False:
            return "the new kernel did not register /dev/liveupdate (it booted without liveupdate=on, or without LUO)"
        return "whether the new kernel registered /dev/liveupdate is not known (its /proc/misc was not read)"
    if not after.get("device"):
        return "the new kernel registered /dev/liveupdate, but the device node is missing"
    return None


def _number_loss(expected, incoming) -> str | None:
    """The incoming number must be the one the old kernel was to hand over; either one unknown proves nothing."""
    if expected is not None and incoming == expected:
        return None
    got = "logged no liveupdate number" if incoming is None else f"logged liveupdate number {incoming}"
    wanted = "no number was read" if expected is None else f"the old one was to hand over {expected}"
    return f"the new kernel {got}, {wanted}: the LUO state is not shown to have come across"


def _restore_losses(failed: dict, carried: list) -> list:
    """The new kernel's logged restore failures: after one, every open of /dev/liveupdate fails (EIO), so no
    session it was handed can be retrieved."""
    names = failed.get("sessions") or []
    handlers = ", ".join(failed.get("handlers") or []) or "not named"
    lost = [f"LUO session {name} could not be restored by the new kernel (its log: Failed to deserialize files; "
            f"no registered handler for {handlers})" for name in names]
    others = [c for c in carried if c not in (f"session {n}" for n in names)]
    if names and others:
        lost.append(f"{', '.join(others)} cannot be retrieved either: after a failed restore the new kernel refuses "
                    "every open of /dev/liveupdate")
    return lost


def verify(before: dict, after: dict, method: str) -> dict:
    """What came across a jump of live update state, and what was lost (each loss a sentence); also on the controller.

    What the jump carries through LUO (the sessions processes held, across kexec -e; the preserved fd stores,
    across systemctl kexec) is kept only where the new kernel can hand it back: it registered /dev/liveupdate and
    the node is there, its incoming liveupdate number is the one the old kernel was to hand over (unknown is a
    loss), and it logged no failed restore.  After a systemctl kexec, PID 1's KExecCount one higher and every unit
    that had a preserved fd store active again with at least as many stored fds.  Lost by construction: fd stores
    across kexec -e (PID 1 never serialises them) and a process's sessions across systemctl kexec (it stops the
    process first).
    """
    before, after = before or {}, after or {}
    sd_b, sd_a = before.get("systemd") or {}, after.get("systemd") or {}
    expected = (before.get("outgoing") or {}).get("next_number")
    incoming = after.get("incoming_number")
    kept, sessions = liveupdate.preserving_units(before), liveupdate.held_sessions(before)
    # An LUO entry that carried nothing loses nothing: a target without LUO may drop it (issue 27).
    carried = ([f"{u['unit']}'s fd store" for u in kept] if method == "systemctl"
               else [f"session {s.get('name') or '?'}" for s in sessions]) if before.get("device") else []
    receiver = receiver_refusal(after)
    lost = [x for x in (_number_loss(expected, incoming) if carried else None,
                        f"{receiver}: nothing in it can give back {', '.join(carried)}" if carried and receiver else None)
            if x]
    count_b, count_a = sd_b.get("kexec_count"), sd_a.get("kexec_count")
    if method == "systemctl" and count_b is not None and count_a != count_b + 1:
        lost.append(f"systemd's KExecCount is {count_a} after the jump, {count_b} before: PID 1 did not come "
                    "through the kexec with its serialised state")
    after_units = {u.get("unit"): u for u in sd_a.get("preserving_units") or []}
    for u in kept:
        if method != "systemctl":  # a restarted service may refill its store: the count proves nothing here
            lost.append(f"{u['unit']}'s fd store ({u.get('fd_store') or 0} fds) was lost: kexec -e bypasses "
                        "systemd, which never serialised it")
            continue
        now = after_units.get(u["unit"]) or {}
        if now.get("active") != "active" or (now.get("fd_store") or 0) < (u.get("fd_store") or 0):
            lost.append(f"{u['unit']} came back {now.get('active') or 'without its preservation'} with "
                        f"{now.get('fd_store') or 0} of its {u.get('fd_store') or 0} stored fds")
    lost += _restore_losses(after.get("restore_failures") or {}, carried)
    if method == "systemctl":
        lost += [f"LUO session {s.get('name') or '?'} held by pid {s['pid']} ({s.get('comm') or '?'}) was lost: "
                 "systemctl kexec stopped its process" for s in sessions]
    return {"method": method, "expected_number": expected, "incoming_number": incoming,
            "kexec_count_before": count_b, "kexec_count_after": count_a,
            "sessions_before": [s.get("name") for s in sessions], "units_before": [u["unit"] for u in kept],
            "device_after": receiver is None, "lost": lost}

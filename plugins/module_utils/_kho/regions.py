# Copyright (c) kexec.kho contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
"""The reserve_mem regions a handover carries: which ones a target command line keeps (before the jump), and which
ones the new kernel took up (after it, from the receiver's own record).  Not a public API.

A kernel revives a region handed to it only when its own command line has ``reserve_mem=SIZE:ALIGN:NAME`` with the
same name and size and an alignment the old start satisfies (mm/memblock.c, reserve_mem_kho_revive); else the
incoming tree still lists the region, but its memory is ordinary free memory in the new kernel.
"""

from __future__ import annotations

import re

from ansible_collections.kexec.kho.plugins.module_utils._kho.cmdline import kho_params

REVIVED = re.compile(r"Revived memory reservation '([^']{1,64})' from KHO")
NOT_REVIVED = re.compile(r"KHO reserve-mem '([^']{1,64})' has (wrong \w+)|FDT 'memblock' has no child '([^']{1,64})'")
RAMOOPS = re.compile(r"ramoops: using (0x[0-9a-fA-F]+|\d+)@(0x[0-9a-fA-F]+|\d+)")
MAX_LINES = 4096  # log lines looked at, at most


CACHE_LINE = 64  # SMP_CACHE_BYTES on x86: reserve_mem() rounds a smaller alignment up to it


def on_line(line: str) -> dict:
    """{label: {"size", "align"}} of the well-formed reserve_mem= values of a command line; the kernel keeps the
    first one of a name (a later one is refused, -EBUSY), and aligns to at least a cache line."""
    found: dict = {}
    for r in kho_params(line or "")["reserve_mem"]:
        found.setdefault(r["label"], {"size": r["size"], "align": max(r["align"], CACHE_LINE)})
    return found


def dropped_by(running: str, target: str) -> list:
    """The running kernel's regions that a kernel booted with ``target`` would not revive, each with why."""
    have, want = on_line(running), on_line(target)
    dropped = []
    for label, region in sorted(have.items()):
        other = want.get(label)
        if other is None:
            why = f"the target command line has no reserve_mem= for {label!r}"
        elif other["size"] != region["size"]:
            why = f"the target command line asks {other['size']} bytes for {label!r}, the running kernel has {region['size']}"
        elif other["align"] > region["align"]:
            why = (f"the target command line asks an alignment of {other['align']} for {label!r}, the running kernel "
                   f"placed it with {region['align']}: the kernel revives it only where its start is aligned so, which "
                   "this line does not promise")
        else:
            continue
        dropped.append({"name": label, "reason": why})
    return dropped


def refused(running: str, target: str, allowed=()) -> str | None:
    """Why a load with ``target`` would lose regions not named in ``allowed``; None when it keeps them all."""
    lost = [d for d in dropped_by(running, target) if d["name"] not in set(allowed or ())]
    if not lost:
        return None
    return ("the new kernel would not take up every region handed over: " + "; ".join(d["reason"] for d in lost) + ": its memory would be free "
            "memory after the jump. Give the target command line the same reserve_mem= (kho_kexec cmdline or append), "
            "or name the regions that may go in drop_regions (kho_handover_drop_regions in the role)")


# ---------------------------------------------------------------- after the jump: the receiver's word

def _log_lines(log) -> list:
    return [str(x) for x in (log or [])[:MAX_LINES]]


def _from_log(name: str, lines: list):
    """True: the new kernel logged the revival; False: it logged why not; None: it said nothing of it."""
    for line in lines:
        m = REVIVED.search(line)
        if m and m.group(1) == name:
            return True
        m = NOT_REVIVED.search(line)
        if m and name in (m.group(1), m.group(3)):
            return False
    return None


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


def _attached(region: dict, lines: list) -> bool:
    for line in lines:
        m = RAMOOPS.search(line)
        if m and int(m.group(2), 0) == region["start"]:
            return True
    return False


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

# Copyright (c) kexec.kho contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
"""The reserve_mem regions a handover carries: which ones a target command line keeps (before the jump), and which
ones the new kernel took up (after it, from the receiver's own record).  Not a public API.

A kernel revives a region handed to it only when its own command line has ``reserve_mem=SIZE:ALIGN:NAME`` with the
same name and size and an alignment the old start satisfies (mm/memblock.c, reserve_mem_kho_revive); else the
incoming tree still lists the region, but its memory is ordinary free memory in the new kernel.
"""

from __future__ import annotations

import os
import re
import struct
import sys

from ansible_collections.kexec.kho.plugins.module_utils._kho.cmdline import Cmdline, kho_params
from ansible_collections.kexec.kho.plugins.module_utils._kho.host import log_message

NAME = r"([^']{1,15})"  # a reserve_mem label: RESERVE_MEM_NAME_SIZE - 1 characters at most
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
MEMBLOCK_BYTES = 1 << 16  # the running kernel's outgoing memblock tree, read at most (8 regions take 1 KiB)

CACHE_LINE = 64  # SMP_CACHE_BYTES on x86: reserve_mem() rounds a smaller alignment up to it
# Where ramoops puts its zones in a region (fs/pstore/ram.c, ramoops_probe) and how it reads them, with the
# defaults of a parameter not given: another layout does not find the record written before the jump.
RAMOOPS_LAYOUT = {"record_size": 4096, "console_size": 4096, "ftrace_size": 4096, "pmsg_size": 4096, "ecc": 0}
# kstrtoul/kstrtoint with base 0, as module parameters are parsed; longer than any 64-bit number is not one.
MODULE_NUMBER = re.compile(r"([+-]?)(0[xX][0-9a-fA-F]{1,16}|0[0-7]{0,22}|[1-9][0-9]{0,19})")


class LogFormatError(ValueError):
    """A kernel log line that starts as one of the kernel's messages but is not in the form the kernel writes."""


def on_line(line: str) -> dict:
    """{label: {"size", "align"}} of the well-formed reserve_mem= values of a command line; the kernel keeps the
    first one of a name (a later one is refused, -EBUSY), and aligns to at least a cache line."""
    found: dict = {}
    for r in kho_params(line or "")["reserve_mem"]:
        found.setdefault(r["label"], {"size": r["size"], "align": max(r["align"], CACHE_LINE)})
    return found


def _misaligned(label: str, align: int, region: dict, start: int | None) -> str | None:
    """Why a kernel asking ``align`` would not revive the region, from its known start (the kernel's own test,
    start & (align - 1)); without the start, only an alignment the running kernel placed it with is promised."""
    if start is not None:
        if not start & (align - 1):
            return None
        return (f"the target command line asks an alignment of {align:#x} for {label!r}, which its start {start:#x} "
                "does not meet: the kernel revives a region only at a start so aligned")
    if align <= region["align"]:
        return None
    return (f"the target command line asks an alignment of {align} for {label!r}, the running kernel placed it "
            f"with {region['align']} and its start is not known here: the kernel revives it only where its start is "
            "aligned so, which this line does not promise")


def dropped_by(running: str, target: str, starts: dict | None = None) -> list:
    """The running kernel's regions that a kernel booted with ``target`` would not revive, each with why.
    ``starts``: {label: start} where known (the running kernel's outgoing memblock tree, memblock_starts)."""
    have, want = on_line(running), on_line(target)
    dropped = []
    for label, region in sorted(have.items()):
        other = want.get(label)
        if other is None:
            why = f"the target command line has no reserve_mem= for {label!r}"
        elif other["size"] != region["size"]:
            why = f"the target command line asks {other['size']} bytes for {label!r}, the running kernel has {region['size']}"
        else:
            why = _misaligned(label, other["align"], region, (starts or {}).get(label))
        if why:
            dropped.append({"name": label, "reason": why})
    return dropped


def refused(running: str, target: str, allowed=(), starts: dict | None = None) -> str | None:
    """Why a load with ``target`` would lose regions not named in ``allowed``; None when it keeps them all."""
    lost = [d for d in dropped_by(running, target, starts) if d["name"] not in set(allowed or ())]
    if not lost:
        return None
    return ("the new kernel would not take up every region handed over: " + "; ".join(d["reason"] for d in lost) + ": its memory would be free "
            "memory after the jump. Give the target command line the same reserve_mem= (kho_kexec cmdline or append), "
            "or name the regions that may go in drop_regions (kho_handover_drop_regions in the role)")


# ---------------------------------------------------------------- the running kernel's outgoing memblock tree

FDT_MAGIC, FDT_BEGIN_NODE, FDT_END_NODE, FDT_PROP, FDT_NOP, FDT_END = 0xD00DFEED, 1, 2, 3, 4, 9


def _fdt_string(blob: bytes, at: int, end: int) -> bytes | None:
    nul = blob.find(b"\0", at, end)
    return None if nul < 0 else blob[at:nul]


def _fdt_nodes(blob: bytes) -> dict | None:
    """{node below the root (b"" the root itself): {property: value}} of a flattened tree of a root and its
    children, every offset checked; None where the blob is not one.  (The controller decodes whole trees with
    pyfdt, plugin_utils/_fdt.py; the host's preflight needs these few values, with the standard library only.)"""
    if len(blob) < 40 or struct.unpack_from(">I", blob)[0] != FDT_MAGIC:
        return None
    total, off_struct, off_strings, _rsv, _ver, _comp, _cpu, size_strings, size_struct = struct.unpack_from(">9I", blob, 4)
    pos, end, strings_end = off_struct, off_struct + size_struct, off_strings + size_strings
    if total > len(blob) or end > total or strings_end > total:
        return None
    nodes: dict = {}
    path: list = []
    while pos + 4 <= end:
        token, pos = struct.unpack_from(">I", blob, pos)[0], pos + 4
        if token == FDT_BEGIN_NODE:
            name = _fdt_string(blob, pos, end)
            if name is None or len(path) >= 2:
                return None
            path.append(name)
            nodes.setdefault(b"/".join(path[1:]), {})
            pos = (pos + len(name) + 4) & ~3
        elif token == FDT_END_NODE and path:
            path.pop()
        elif token == FDT_PROP and path and pos + 8 <= end:
            length, name_off = struct.unpack_from(">2I", blob, pos)
            name = _fdt_string(blob, off_strings + name_off, strings_end)
            if name is None or pos + 8 + length > end:
                return None
            nodes[b"/".join(path[1:])][name] = blob[pos + 8:pos + 8 + length]
            pos = (pos + 8 + length + 3) & ~3
        elif token == FDT_END:
            return nodes
        elif token != FDT_NOP:
            return None
    return None


def memblock_starts(blob: bytes | None, byteorder: str = sys.byteorder) -> dict:
    """{label: start} of a memblock tree as the kernel writes it (kho/out/sub_fdts/memblock: 'memblock-v1', a
    'reserve-mem-v1' child per region with a u64 'start' in the host's byte order); {} where it is not one."""
    nodes = _fdt_nodes((blob or b"")[:MEMBLOCK_BYTES]) or {}
    if (nodes.get(b"") or {}).get(b"compatible") != b"memblock-v1\0":
        return {}
    return {name.decode("utf-8", "replace"): int.from_bytes(props[b"start"], byteorder)
            for name, props in nodes.items()
            if name and props.get(b"compatible") == b"reserve-mem-v1\0" and len(props.get(b"start") or b"") == 8}


def starts(host) -> dict:
    """The running kernel's region starts, from its own outgoing memblock tree; {} where it cannot be read."""
    try:
        return memblock_starts(host.read_bytes(os.path.join(host.out_dir, "sub_fdts", "memblock"), MEMBLOCK_BYTES))
    except OSError:  # over the bound, or unreadable: the starts are not known, the caution applies
        return {}


# ---------------------------------------------------------------- the canary: ramoops on a region, after the jump too

def _module_number(value: str | None, signed: bool) -> int | None:
    """A module parameter's number as the kernel parses it; None where it would refuse it (the default stays)."""
    m = MODULE_NUMBER.fullmatch(value or "")
    if not m or (m.group(1) == "-" and not signed):
        return None
    digits = m.group(2)
    number = int(digits, 16 if digits[:2].lower() == "0x" else 8 if len(digits) > 1 and digits[0] == "0" else 10)
    if number >= (1 << 31 if signed else 1 << 64):  # -ERANGE
        return None
    return -number if m.group(1) == "-" else number


def ramoops_layout(line: str) -> dict:
    """The ramoops parameters of a command line that decide its zones: the last of each, as the kernel applies them;
    sizes rounded down to a power of two as ramoops_probe does, ecc=1 the 16 bytes it stands for."""
    c = Cmdline(line or "")
    layout = {}
    for key, default in RAMOOPS_LAYOUT.items():
        number = _module_number(c.get(f"ramoops.{key}"), signed=key == "ecc")
        number = default if number is None else number
        if key == "ecc":
            layout[key] = 16 if number == 1 else number
        else:
            layout[key] = number and 1 << (number.bit_length() - 1)
    return layout


def canary_refused(running: str, target: str, starts_known: dict | None = None) -> str | None:
    """Why a canary written through pstore before the jump would not be found after it: the running line puts
    ramoops on a reserve_mem region (ramoops.mem_name=), and the target line would not put it there again with the
    same zones.  None where it would, or where the running line does not say where ramoops is (nothing to judge)."""
    name = Cmdline(running or "").get("ramoops.mem_name")
    if not name or name not in on_line(running):
        return None
    why = []
    theirs = Cmdline(target or "").get("ramoops.mem_name")
    if theirs != name:
        why.append(f"it has {'ramoops.mem_name=' + theirs if theirs else 'no ramoops.mem_name='}, the running line "
                   f"ramoops.mem_name={name}")
    why += [d["reason"] for d in dropped_by(running, target, starts_known) if d["name"] == name]
    mine, other = ramoops_layout(running), ramoops_layout(target)
    why += [f"its ramoops.{k} is {other[k]}, the running line's {mine[k]}" for k in RAMOOPS_LAYOUT if other[k] != mine[k]]
    if not mine["pmsg_size"]:
        why.append("the running line's ramoops.pmsg_size is 0: there is no /dev/pmsg0 to write it to")
    if not why:
        return None
    return (f"the canary is written through ramoops on region {name!r} before the jump, and the target command line "
            f"would not attach ramoops to that region as it is now: {'; '.join(why)}. Give the target command line "
            "the same reserve_mem= and ramoops. parameters, or hand over without the canary")


def check_target(host, running: str, target: str, allowed=(), canary: bool = False) -> dict:
    """Before the load: the regions a kernel booted with ``target`` would not revive (``dropped``, names), decided
    from their starts where the running kernel's tree gives them, and why the load is refused (``refusal``: a
    region lost that ``allowed`` does not name; with ``canary``, ramoops not attached to its region again)."""
    known = starts(host)
    dropped = dropped_by(running, target, known)
    refusal = refused(running, target, allowed, known) or (canary_refused(running, target, known) if canary else None)
    return {"dropped": [d["name"] for d in dropped], "refusal": refusal}


# ---------------------------------------------------------------- after the jump: the receiver's word

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

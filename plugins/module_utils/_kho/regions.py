# Copyright (c) kexec.kho contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
"""The reserve_mem regions a handover carries: which ones a target command line keeps, before the jump, on the
host.  Which ones the new kernel took up is judged on the controller (plugin_utils/_receiver.py).  Not a public API.

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

NAME = r"([^']{1,15})"  # a reserve_mem label: RESERVE_MEM_NAME_SIZE - 1 characters at most
MEMBLOCK_BYTES = 1 << 16  # the running kernel's outgoing memblock tree, read at most (8 regions take 1 KiB)

CACHE_LINE = 64  # SMP_CACHE_BYTES on x86: reserve_mem() rounds a smaller alignment up to it
# Where ramoops puts its zones in a region (fs/pstore/ram.c, ramoops_probe) and how it reads them, with the
# defaults of a parameter not given: another layout does not find the record written before the jump.
RAMOOPS_LAYOUT = {"record_size": 4096, "console_size": 4096, "ftrace_size": 4096, "pmsg_size": 4096, "ecc": 0}
# kstrtoul/kstrtoint with base 0, as module parameters are parsed; longer than any 64-bit number is not one.
MODULE_NUMBER = re.compile(r"([+-]?)(0[xX][0-9a-fA-F]{1,16}|0[0-7]{0,22}|[1-9][0-9]{0,19})")


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

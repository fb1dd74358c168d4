# Copyright (c) kexec.kho contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
"""The new kernel's own evidence of a handover, read without Python on the host (issue 38).  Not a public API.

What the new kernel says about the handover is kernel state, there as soon as sshd answers: its incoming tree
(in/: the fdt and every sub-tree, kexec-metadata among them), its own outgoing tree (out/ sub-trees: memblock), the
names memblock/reserve_mem_param lists, its KHO and LUO log records, /proc/misc (whether it registered
/dev/liveupdate) and the device node.  ``command`` is one bounded POSIX sh read of all of it, each file cut on the
host at the bound the Python read has (host.MAX_READ, MAX_LOG_LINES), and sent as base64; ``decode`` makes it, on
the controller, the raw facts kho_facts' module would have sent for the same files (the fields above), for
_decode.facts_from_raw.  What is not kernel state (systemd's fd stores, the pstore search, the workloads' checks)
stays with the module's read after test_command.
"""

from __future__ import annotations

import base64
import binascii
import re
import shlex

from ansible_collections.kexec.kho.plugins.module_utils._kho import host, liveupdate, paths
from ansible_collections.kexec.kho.plugins.module_utils._kho.cmdline import kho_params
from ansible_collections.kexec.kho.plugins.plugin_utils._decode import facts_from_raw
from ansible_collections.kexec.kho.plugins.plugin_utils._facts_after import ReadError, same_boot

MAGIC = "kho-evidence 1"
MAX_SUB_BLOBS = 64  # sub-trees read per side, at most (the decode budget refuses more anyway)
MAX_LOG_BYTES = 1 << 20  # of matching kernel records, at most
MAX_MISC = 1 << 16  # bytes of /proc/misc (liveupdate.MISC_BYTES)
MAX_ANSWER = 48 << 20  # characters of an answer decoded, at most: two sides of bounded blobs, base64
BIG_ENDIAN = {"s390x", "s390", "ppc64", "ppc", "sparc64", "sparc", "mips", "mips64", "m68k", "parisc", "parisc64"}
NAME = re.compile(r"[A-Za-z0-9_.-]{1,64}")  # a sub-tree's name, as the kernel's are (memblock, LUO, kexec-metadata)
LINE = re.compile(r"([a-z_]{1,16}) ?(.*)")


def _b64_of(path: str, limit: int) -> str:
    """sh: the file's first ``limit`` + 1 bytes as one base64 line, or "-" where it cannot be read."""
    p = shlex.quote(path)
    return f'if [ -r {p} ]; then head -c {limit + 1} {p} | base64 | tr -d "\\n"; echo; else echo -; fi'


def _side(kho: str, side: str) -> str:
    """sh: one side's fdt and sub-trees (names of the kernel's form only, at most MAX_SUB_BLOBS)."""
    d = shlex.quote(f"{kho}/{side}")
    return (f'if [ -d {d} ]; then echo "side {side}"; printf "fdt {side} "; {_b64_of(f"{kho}/{side}/fdt", host.MAX_READ)}; '
            f'n=0; for f in {d}/sub_fdts/*; do [ -f "$f" ] || continue; b=${{f##*/}}; '
            f'case "$b" in *[!A-Za-z0-9_.-]*) continue;; esac; n=$((n+1)); [ $n -le {MAX_SUB_BLOBS} ] || break; '
            f'printf "sub {side} %s " "$b"; head -c {host.MAX_READ + 1} "$f" | base64 | tr -d "\\n"; echo; done; fi')


def command(roots: dict | None = None) -> str:
    """The read, for the roots of the kernel's file systems (the module's internal option; defaults on a host)."""
    r = {**host.ROOTS, **(roots or {})}
    debugfs, procfs, devfs = r["debugfs_root"].rstrip("/") or "/", r["procfs_root"], r["devfs_root"]
    kho = f"{debugfs}/{paths.KHO}"
    kmsg = shlex.quote(f"{devfs}/kmsg")
    log = (f"if [ -r {kmsg} ]; then printf 'log '; dd if={kmsg} iflag=nonblock bs={host.KMSG_RECORD} 2>/dev/null "
           f"| grep -a -E {shlex.quote(host.LOG_PATTERN)} | head -n {host.MAX_LOG_LINES} | head -c {MAX_LOG_BYTES} "
           f'| base64 | tr -d "\\n"; echo; else echo "log -"; fi')
    parts = [
        f"echo {shlex.quote(MAGIC)}",
        f'echo "boot_id $(head -c 64 {shlex.quote(procfs + "/sys/kernel/random/boot_id")} 2>/dev/null | head -n 1)"',
        f'echo "release $(head -c 256 {shlex.quote(procfs + "/sys/kernel/osrelease")} 2>/dev/null | head -n 1)"',
        'echo "machine $(uname -m)"',
        f"printf 'cmdline '; {_b64_of(procfs + '/cmdline', 4096)}",
        f"printf 'misc '; {_b64_of(procfs + '/misc', MAX_MISC)}",
        f"if [ -e {shlex.quote(devfs + '/liveupdate')} ]; then echo 'device 1'; else echo 'device 0'; fi",
        f"if [ -e {shlex.quote(kho)} ]; then echo 'kho 1'; else echo 'kho 0'; fi",
        f"if [ -e {shlex.quote(kho + '/out/finalize')} ]; then echo 'finalize 1'; else echo 'finalize 0'; fi",
        f"printf 'rmp '; {_b64_of(debugfs + '/memblock/reserve_mem_param', host.MAX_READ)}",
        _side(kho, "in"), _side(kho, "out"), log, "echo end",
    ]
    return "; ".join(parts)


class EvidenceError(ValueError):
    """An answer that is not the read's: too long, cut short, or not in its form."""


def _bytes(value: str, limit: int, what: str) -> bytes | None:
    if value == "-":
        return None
    try:
        data = base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError) as exc:
        raise EvidenceError(f"{what} is not base64") from exc
    if len(data) > limit:
        raise EvidenceError(f"{what} is larger than the {limit} bytes read at most")
    return data


def _lines(text) -> list:
    if not isinstance(text, str) or len(text) > MAX_ANSWER:
        raise EvidenceError(f"the answer is not text of at most {MAX_ANSWER} characters")
    lines = text.replace("\r\n", "\n").strip("\n").split("\n")  # a pty (ssh -tt, become) ends lines with CR LF
    if not lines or lines[0] != MAGIC or lines[-1] != "end":
        raise EvidenceError("the answer is not the evidence read's (its first line, or its end, is missing)")
    return lines[1:-1]


def _parse(lines: list) -> tuple:
    """({key: value} of the single lines, {side: {"fdt", "sub_blobs"}} of the trees read)."""
    single, sides = {}, {}
    for line in lines:
        m = LINE.fullmatch(line)
        if not m:
            raise EvidenceError(f"a line of the answer is not in the read's form: {line[:80]!r}")
        key, value = m.groups()
        if key == "side":
            sides.setdefault(value, {"fdt": None, "sub_blobs": {}})
        elif key in ("fdt", "sub"):
            side, _sep, rest = value.partition(" ")
            if side not in sides:
                raise EvidenceError(f"a {key} line of side {side[:8]!r}, which the answer did not open")
            if key == "fdt":
                sides[side]["fdt"] = _bytes(rest, host.MAX_READ, f"{side}/fdt")
            else:
                name, _sep, data = rest.partition(" ")
                if not NAME.fullmatch(name) or len(sides[side]["sub_blobs"]) >= MAX_SUB_BLOBS:
                    raise EvidenceError(f"a sub-tree of {side}/ is named {name[:80]!r} or one too many")
                sides[side]["sub_blobs"][name] = _bytes(data, host.MAX_READ, f"{side}/sub_fdts/{name}")
        else:
            single[key] = value
    return single, sides


def _b64(data: bytes | None) -> str | None:
    return None if data is None else base64.b64encode(data).decode("ascii")


def _tree(sides: dict, side: str) -> dict:
    got = sides.get(side)
    return {"present": got is not None, "fdt": _b64((got or {}).get("fdt")),
            "sub_blobs": {k: _b64(v) for k, v in ((got or {}).get("sub_blobs") or {}).items() if v is not None}}


def _log(data: bytes | None) -> list | None:
    if data is None:
        return None
    found = (host.kernel_record(r) for r in data.split(b"\n") if len(r) <= host.KMSG_RECORD)
    rx = re.compile(host.LOG_PATTERN)
    return [line for line in found if line is not None and rx.search(host.log_message(line))][:host.MAX_LOG_LINES]


def _interface(single: dict, sides: dict) -> str:
    """By what exists, as host.generation; "none" where no KHO directory is (the module says "unknown" where the
    kernel's config says KHO is enabled: the read does not look at the config)."""
    if single.get("kho") != "1":
        return "none"
    return "finalize" if single.get("finalize") == "1" else "live" if "out" in sides else "unknown"


def decode(text) -> dict:
    """The raw facts of the read (the fields kho_facts' module sends of the same files), or EvidenceError."""
    single, sides = _parse(_lines(text))
    cmdline = (_bytes(single.get("cmdline", "-"), 4096, "cmdline") or b"").decode("utf-8", "replace").strip()
    misc = _bytes(single.get("misc", "-"), MAX_MISC, "/proc/misc")
    rmp = _bytes(single.get("rmp", "-"), host.MAX_READ, "reserve_mem_param")
    log = _log(_bytes(single.get("log", "-"), MAX_LOG_BYTES, "the kernel log"))
    machine = single.get("machine", "").strip()
    return {
        "boot_id": single.get("boot_id", "").strip() or None,
        "release": single.get("release", "").strip() or None,
        "machine": machine, "byteorder": "big" if machine in BIG_ENDIAN else "little",
        "cmdline": cmdline, "params": kho_params(cmdline), "interface": _interface(single, sides),
        "log": log,
        "reserve_mem_param": None if rmp is None else [x.split()[0] for x in rmp.decode("utf-8", "replace").splitlines()
                                                       if x.split()],
        "liveupdate": {"device": single.get("device") == "1",
                       "registered": None if misc is None else any(
                           line.split()[1:] == ["liveupdate"] for line in misc.decode("utf-8", "replace").splitlines()),
                       "incoming_number": liveupdate.incoming_number(log),
                       "restore_failures": liveupdate.restore_failures(log)},
        "out": _tree(sides, "out"), "in": _tree(sides, "in"),
    }


def enough(load, pstore_search) -> bool:
    """Whether this read is all the receiver's checks need after a jump (kho_kexec's facts_after reads it instead of
    the module's code): no pstore search (the canary), and nothing of live update rides on the handover - the load's
    target check (its ``handed_over``) names no LUO or memfd entry, since the sessions and the units' fd stores are
    user space's, which only the module's read asks."""
    handed = ((load or {}).get("target") or {}).get("handed_over") if isinstance(load, dict) else None
    return not pstore_search and isinstance(handed, list) and not any(
        str(c).startswith(("luo", "memfd")) for c in handed)


def facts(text, new_boot_id) -> dict:
    """The read's answer as _facts_after.decode answers: {"facts", "pstore_found"}, or {"error": why} for an answer
    not in the read's form or of another boot than ``new_boot_id``.  Total: never raises."""
    try:
        raw = decode(text)
        same_boot(raw["boot_id"], new_boot_id)
        return {"facts": facts_from_raw(raw), "pstore_found": []}
    except (EvidenceError, ReadError) as exc:
        return {"error": str(exc)}
    except Exception as exc:  # pylint: disable=broad-except  # a host's answer that breaks the decoder fails the read
        return {"error": f"the new kernel's evidence could not be decoded: {type(exc).__name__}: {exc}"}

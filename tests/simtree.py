"""Simulated KHO hosts: debugfs, sysfs, procfs and dev trees for one interface generation.

    python tests/simtree.py GENERATION DEST     (prints the module options as JSON)

Generations: none, builtin-off, finalize-6.16, finalize-6.19, live-cold, live-handover, and live-7.4 (the
handover with 7.4's names: the scratch area's files as bootmem_phys/bootmem_len, the line's kho_bootmem=).
The blobs come from the real 7.3.4 handover recorded in tests/fixtures/kho-7.3.4 (see its README).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

FIXTURES = Path(__file__).resolve().parent / "fixtures" / "kho-7.3.4"
GENERATIONS = ("none", "builtin-off", "finalize-6.16", "finalize-6.19", "live-cold", "live-handover", "live-7.4")
BOOT_ID = "4b1f3b0e-6c1d-4c47-9d4c-0d3c1c0e2a11"


def _write(path: Path, data: bytes | str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data if isinstance(data, bytes) else data.encode())


def _side(dest: Path, fixture_dir: str, prefix: str, side: str, with_fdt: bool) -> None:
    for f in sorted((FIXTURES / fixture_dir).glob(f"{prefix}_*")):
        rest = f.name[len(prefix) + 1:]
        if rest == "fdt" and not with_fdt:
            continue
        rel = "sub_fdts/" + rest[len("sub_fdts_"):] if rest.startswith("sub_fdts_") else rest
        _write(dest / "debug" / "kho" / side / rel, f.read_bytes())


def options(dest: Path) -> dict:
    """The modules' arguments that point them at the tree under ``dest`` (their internal option)."""
    return {"_internal": roots(dest)}


def roots(dest: Path) -> dict:
    return {"debugfs_root": str(dest / "debug"), "sysfs_root": str(dest / "sys"),
            "procfs_root": str(dest / "proc"), "devfs_root": str(dest / "dev")}


def build(generation: str, dest: Path, kexec_loaded: bool = False) -> dict:
    if generation not in GENERATIONS:
        raise SystemExit(f"unknown generation {generation!r}; one of {', '.join(GENERATIONS)}")
    cmdline = (FIXTURES / "cold" / "proc_cmdline").read_text()
    if generation in ("none", "builtin-off"):
        cmdline = cmdline.replace("kho=on ", "")
    if generation == "live-7.4":
        cmdline = cmdline.replace("kho=on ", "kho=on kho_bootmem=10% ")
    _write(dest / "proc" / "cmdline", cmdline)
    _write(dest / "proc" / "mounts", f"sysfs /sys sysfs rw 0 0\ndebugfs {dest / 'debug'} debugfs rw 0 0\n")
    _write(dest / "proc" / "sys" / "kernel" / "random" / "boot_id", BOOT_ID + "\n")
    _write(dest / "proc" / "sys" / "kernel" / "osrelease", "7.3.4\n")
    symbols = "ffffffff81000000 T _stext\n"
    if generation != "none":
        symbols += "ffffffff81234560 T kho_populate\nffffffff81234570 T kho_init\n"
    _write(dest / "proc" / "kallsyms", symbols)
    _write(dest / "sys" / "kernel" / "kexec_loaded", "1\n" if kexec_loaded else "0\n")
    _write(dest / "sys" / "kernel" / "security" / "lockdown", "[none] integrity confidentiality\n")
    (dest / "debug").mkdir(parents=True, exist_ok=True)
    kmsg = "6,1,0,-;Linux version 7.3.4\n"
    if generation.startswith(("live", "finalize")):
        cold = generation not in ("live-handover", "live-7.4")
        _side(dest, "cold" if cold else "handover1", "out", "out", with_fdt=cold)
        if generation.startswith("finalize"):
            _write(dest / "debug" / "kho" / "out" / "finalize", "0\n")
        if not cold:
            _side(dest, "handover1", "in", "in", with_fdt=True)
            for n, line in enumerate((FIXTURES / "handover1" / "dmesg_kho.txt").read_text().splitlines()):
                stamp, message = line.split("] ", 1)
                usec = int(float(stamp.strip("[ ")) * 1e6)
                kmsg += f"6,{n + 2},{usec},-;{message}\n"
    if generation == "live-7.4":
        out = dest / "debug" / "kho" / "out"
        for old, new in (("scratch_phys", "bootmem_phys"), ("scratch_len", "bootmem_len")):
            (out / old).rename(out / new)
    _write(dest / "dev" / "kmsg", kmsg)
    return options(dest)


if __name__ == "__main__":
    if len(sys.argv) != 3:
        raise SystemExit(__doc__)
    print(json.dumps(build(sys.argv[1], Path(sys.argv[2]))))

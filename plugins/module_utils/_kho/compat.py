# Copyright (c) kexec.kho contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Can the target kernel read what the running one is about to hand over?  Decided before the load.  Not a public API.

What is handed over: the compatibles of the running kernel's outgoing blobs (kho/out: the root, memblock and its
reserve-mem nodes, the LUO entry), and for LUO sessions held by processes, the running kernel's memfd file handler.
What the target reads: the compatibles its image carries (module_utils/_kho/image.py), or failing that its config.
A target that lacks one is refused, naming what would be lost; a target that cannot be read is ``unknown``.
"""

from __future__ import annotations

import os

from ansible_collections.kexec.kho.plugins.module_utils._kho import image, liveupdate

READ_LIMIT = 1 << 20  # bytes of each outgoing blob looked through
CONSEQUENCE = {
    "kho": "the new kernel would skip the whole handover: every region and session lost, with no error",
    "memblock": "the new kernel would not revive the reserve_mem regions: their memory becomes free memory",
    "reserve-mem": "the new kernel would not revive the reserve_mem regions: their memory becomes free memory",
    "luo": "the new kernel could not restore the live update sessions (on some kernels a restore failure panics)",
    "memfd": "the new kernel could not restore the memfds of the LUO sessions: the sessions are lost",
}
CONFIG_OF = {"kho": "CONFIG_KEXEC_HANDOVER", "luo": "CONFIG_LIVEUPDATE", "memfd": "CONFIG_LIVEUPDATE_MEMFD"}


def _tokens(data: bytes | None) -> set:
    return {m.decode() for m in image.TOKEN.findall((data or b"")[:READ_LIMIT])}


def _read(host, path: str) -> bytes | None:
    try:
        return host.read_bytes(path)
    except OSError:  # an unreadable blob names no format: what it would have named is then not checked
        return None


def handed_over(host, lu: dict | None, running_image: str | None) -> dict:
    """{family: token} the running kernel is about to hand over; the running image is read only where needed."""
    found = _tokens(_read(host, os.path.join(host.out_dir, "fdt")))
    try:
        blobs = host.blobs(os.path.join(host.out_dir, "sub_fdts")).values()
    except OSError:
        blobs = []
    for data in blobs:
        found |= _tokens(data)
    needed = {image.family(t): t for t in sorted(found)}
    held = liveupdate.held_sessions(lu)
    if not held and not liveupdate.preserving_units(lu):  # an LUO entry that carries nothing loses nothing
        needed.pop("luo", None)
    if "kho" not in needed:  # after a handover out/fdt is gone (7.x): the root this kernel accepted is the one it writes
        needed.update({image.family(t): t for t in sorted(_tokens(_read(host, os.path.join(host.in_dir, "fdt"))))
                       if image.family(t) == "kho"})
    wanted = [f for f in ("kho", "memfd" if held else None) if f and f not in needed]
    if wanted and host.exists(host.kho):
        running = image.inspect(running_image) if running_image else {"compatibles": []}
        for token in running.get("compatibles") or []:
            if image.family(token) in wanted:
                needed.setdefault(image.family(token), token)
        for fam in wanted:
            needed.setdefault(fam, f"{fam} (version not read)")
    return needed


def _missing(needed: dict, target: dict) -> list:
    if target.get("readable"):
        have = set(target.get("compatibles") or ())
        return [tok for fam, tok in needed.items() if tok not in have
                and not (tok.endswith("(version not read)") and any(image.family(h) == fam for h in have))]
    config = target.get("config") or {}
    return [tok for fam, tok in needed.items() if CONFIG_OF.get(fam) and config.get(CONFIG_OF[fam]) == "n"]


def sides(missing: list, target: dict) -> list:
    """Each missing format, both sides named, version by version: ``sends memfd-v2, target accepts memfd-v3``."""
    have = target.get("compatibles") or []
    out = []
    for tok in missing:
        fam = image.family(tok.split(" ")[0])
        same = sorted(h for h in have if image.family(h) == fam)
        accepts = ", ".join(same) if same else (f"no {fam}" if target.get("readable") else f"no {fam} (its config)")
        out.append(f"sends {tok}, target accepts {accepts}")
    return out


def check(needed: dict, target: dict, sessions_held: bool) -> dict:
    """compatible / incompatible / unknown, with what the target lacks and what would happen."""
    missing = _missing(needed, target)
    status = "incompatible" if missing else ("compatible" if target.get("readable") else "unknown")
    rec = {"status": status, "handed_over": sorted(needed.values()), "missing": missing,
           "target_release": target.get("release"), "target_compatibles": target.get("compatibles") or [],
           "source": "image" if target.get("readable") else (target.get("config_source") or None),
           "consequences": sorted({CONSEQUENCE[image.family(t.split(' ')[0])] for t in missing
                                   if image.family(t.split(' ')[0]) in CONSEQUENCE}),
           "sides": sides(missing, target)}
    if status == "incompatible":
        rec["msg"] = (f"the target kernel {target.get('path')} ({target.get('release') or 'release unknown'}) cannot "
                      f"read {', '.join(missing)}, which this kernel hands over ({'; '.join(rec['sides'])}): "
                      f"{'; '.join(rec['consequences'])}")
    elif status == "unknown":
        rec["msg"] = (f"what the target kernel {target.get('path')} can read is unknown ({target.get('why')})"
                      + ("; LUO sessions are held, and a target that cannot restore them loses them" if sessions_held
                         else ""))
    return rec


def refusal(support: dict, sessions_held: bool, target_check: str) -> str | None:
    """Why the load is refused (target_check=refuse): a target missing support, or unknown where sessions are held."""
    if target_check != "refuse":
        return None
    if support["status"] == "incompatible" or (support["status"] == "unknown" and sessions_held):
        return support["msg"] + ". Load a kernel that reads them, or set target_check: report to load it anyway"
    return None

# Copyright (c) kexec.kho contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
"""KHO blob schemas, decoded on the controller.  Not a public API.

Root tree (kho-v1 .. kho-v4), its sub-blob listing, ``memblock`` (reserve_mem
regions), ``kexec-metadata`` (a packed C struct) and anything else as an FDT
or an opaque binary.  Every number KHO writes is in the CPU's byte order.
"""

from __future__ import annotations

import binascii
import hashlib
import re
import struct

from ansible_collections.kexec.kho.plugins.module_utils._kho import metadata
from ansible_collections.kexec.kho.plugins.module_utils._kho.image import compatible_tokens
from ansible_collections.kexec.kho.plugins.plugin_utils import _fdt

BASE64 = re.compile("[A-Za-z0-9+/]*={0,2}")
ROOT_VERSIONS = {"kho-v1": 1, "kho-v2": 2, "kho-v3": 3, "kho-v4": 4}
METADATA_NAME = "kexec-metadata"
LUO_NAME = "LUO"
LUO_MAGIC = b"luo-v"  # struct luo_ser: char compatible[8], u64 liveupdate_num, u64 sessions_pa, u64 flbs_pa
LUO_FIELDS = "8sQQQ"


class BlobError(ValueError):
    """A blob whose content does not match its schema."""


def _order(byteorder: str) -> str:
    if byteorder not in ("little", "big"):
        raise ValueError(f"byteorder must be 'little' or 'big', not {byteorder!r}")
    return byteorder


def _u64(props: dict, name: str, byteorder: str, where: str) -> int | None:
    raw = props.get(name)
    if raw is None:
        return None
    if len(raw) != 8:
        raise BlobError(f"{where}: property {name!r} has {len(raw)} bytes, a u64 needs 8")
    return int.from_bytes(raw, byteorder)


def _string(props: dict, name: str) -> str | None:
    raw = props.get(name)
    if not raw:
        return None
    return raw.split(b"\0", 1)[0].decode("ascii", "replace")


def decode_metadata(data: bytes, byteorder: str = "little") -> dict:
    try:
        return metadata.decode(data, _order(byteorder))
    except metadata.MetadataError as exc:
        raise BlobError(str(exc)) from exc


def reserve_mem(tree: dict, byteorder: str = "little") -> list:
    regions = []
    for label, node in tree["nodes"].items():
        props = node["properties"]
        where = f"memblock/{label}"
        if "reserve-mem-v1" not in compatible_tokens(_string(props, "compatible")):
            raise BlobError(f"{where}: compatible {_string(props, 'compatible')!r}, expected 'reserve-mem-v1'")
        start = _u64(props, "start", byteorder, where)
        size = _u64(props, "size", byteorder, where)
        if start is None or size is None:
            raise BlobError(f"{where}: missing start or size")
        regions.append({"name": label, "start": start, "size": size})
    return regions


def decode_blob(data: bytes, name: str | None = None, byteorder: str = "little",
                budget: _fdt.Budget | None = None) -> dict:
    """One sub-blob (or any blob): its format and decoded content; raises on a bad one or one over ``budget``."""
    byteorder = _order(byteorder)
    rec: dict = {"size": len(data), "sha256": hashlib.sha256(data).hexdigest()}
    if _fdt.is_fdt(data):
        tree = _fdt.parse(data, budget)
        rec["format"] = "fdt"
        rec["compatible"] = _string(tree["properties"], "compatible")
        rec["tree"] = _fdt.readable(tree, byteorder)
        tokens = compatible_tokens(rec["compatible"])
        if "memblock-v1" in tokens:
            rec["reserve_mem"] = reserve_mem(tree, byteorder)
        elif any(t.startswith("kho-v") for t in tokens):  # kho-v1..v4, and later ones reported as unknown
            rec["handover"] = root_listing(tree, byteorder)
    elif name == METADATA_NAME:
        rec["format"] = METADATA_NAME
        rec["metadata"] = decode_metadata(data, byteorder)
    elif data.startswith(LUO_MAGIC):  # by content, never by name alone
        rec["format"] = "luo"
        rec["luo"] = decode_luo(data, byteorder)
    else:
        rec["format"] = "binary"
    return rec


def decode_luo(data: bytes, byteorder: str = "little") -> dict:
    """The outgoing LUO entry (struct luo_ser): its version, the number the next kernel will log, what it carries."""
    size = struct.calcsize("<" + LUO_FIELDS)
    if len(data) < size:
        raise BlobError(f"LUO: {len(data)} bytes, struct luo_ser has {size}")
    raw_compat, number, sessions_pa, flbs_pa = struct.unpack(("<" if byteorder == "little" else ">") + LUO_FIELDS,
                                                             data[:size])
    compatible = raw_compat.split(b"\0", 1)[0].decode("ascii", "replace")
    return {"compatible": compatible, "next_number": number, "sessions": sessions_pa != 0, "flbs": flbs_pa != 0}


def root_version(compatible) -> int | None:
    """The kho-vN of a root compatible, also in a composite such as 'kho-v4;radix-v1' (any token of it)."""
    return next((ROOT_VERSIONS[t] for t in compatible_tokens(compatible) if t in ROOT_VERSIONS), None)


def root_listing(tree: dict, byteorder: str = "little") -> dict:
    """The root tree's own facts: compatible, preserved-memory-map, sub-blob addresses."""
    props = tree["properties"]
    compatible = _string(props, "compatible")
    blobs = {}
    for child, node in tree["nodes"].items():
        cp = node["properties"]
        where = f"root/{child}"
        phys = _u64(cp, "preserved-data", byteorder, where)
        if phys is None:
            phys = _u64(cp, "fdt", byteorder, where)  # kho-v1
        blobs[child] = {"phys": phys, "blob_size": _u64(cp, "blob-size", byteorder, where)}
    return {
        "compatible": compatible,
        "version": root_version(compatible),
        "known_version": root_version(compatible) is not None,
        "preserved_memory_map": _u64(props, "preserved-memory-map", byteorder, "root"),
        "listed": blobs,
    }


def b64decode(value) -> bytes:
    if isinstance(value, bytes):
        data = value
    elif not isinstance(value, str):
        raise BlobError(f"expected base64 text, got {type(value).__name__}")
    elif len(value) > (_fdt.MAX_READ + 2) // 3 * 4:
        raise BlobError(f"{len(value)} characters of base64 is more than the {_fdt.MAX_READ} bytes a host may send")
    else:
        if not BASE64.fullmatch(value):
            raise BlobError("not valid base64: a character outside its alphabet, or padding inside")
        try:
            data = binascii.a2b_base64(value)  # from the text itself: base64.b64decode would copy it first
        except (binascii.Error, ValueError) as exc:
            raise BlobError(f"not valid base64: {exc}") from exc
    if len(data) > _fdt.MAX_READ:
        raise BlobError(f"{len(data)} bytes is more than the {_fdt.MAX_READ} a host may send for one blob")
    return data


def _mapping(value, where: str, errors: list) -> dict:
    """A part of the module's output that must be a mapping; anything else is an error, never a crash."""
    if value is None:
        return {}
    if isinstance(value, dict):
        return value
    errors.append({"blob": where, "error": f"expected a mapping, got {type(value).__name__}"})
    return {}


def _size(encoded) -> int:
    """The bytes a blob decodes to, told before decoding it."""
    return len(encoded) if isinstance(encoded, bytes) else len(encoded) * 3 // 4 if isinstance(encoded, str) else 0


def _charge_sub_blobs(sub_blobs: dict, where: str, budget: _fdt.Budget, errors: list) -> dict:
    """The sub-blobs to decode: all of them, or none when their count or size is over the budget."""
    if not sub_blobs:
        return sub_blobs
    try:
        budget.charge(blobs=len(sub_blobs), bytes=sum(_size(v) for v in sub_blobs.values()))
    except _fdt.OverBudget as exc:
        errors.append({"blob": where, "error": f"{exc}; none of the {len(sub_blobs)} sub-blobs decoded"})
        return {}
    return sub_blobs


def decode_side(raw: dict, side: str, byteorder: str = "little",
                budget: _fdt.Budget | None = None) -> tuple[dict, list]:
    """Build the ``in`` or ``out`` facts from the module's raw reads.

    ``raw`` holds ``fdt`` (base64 or None) and ``sub_blobs`` ({name: base64}).  Decoding is charged to
    ``budget`` (the host's; by default one of this side's own).
    Returns (facts, errors); each error names its blob, nothing raises.
    """
    budget = budget or _fdt.Budget()
    errors: list = []
    facts: dict = {"fdt": {"status": "absent"}, "sub_blobs": {}, "reserve_mem": [], "kexec_metadata": None}
    raw = _mapping(raw, side, errors)
    sub_blobs = _mapping(raw.get("sub_blobs"), f"{side}/sub_fdts", errors)
    sub_blobs = _charge_sub_blobs(sub_blobs, f"{side}/sub_fdts", budget, errors)
    listed = _decode_root(raw.get("fdt"), side, byteorder, budget, facts, errors) if raw.get("fdt") is not None else {}
    for name in sorted(set(listed) | {str(name) for name in sub_blobs}):
        rec = _decode_sub(name, listed.get(name), sub_blobs.get(name), side, byteorder, budget)
        if "error" in rec:
            errors.append({"blob": f"{side}/sub_fdts/{name}", "error": rec["error"]})
        facts["sub_blobs"][name] = rec
        if "reserve_mem" in rec:
            facts["reserve_mem"] = rec["reserve_mem"]
        if "metadata" in rec:
            facts["kexec_metadata"] = rec["metadata"]
    return facts, errors


def _decode_root(encoded: str, side: str, byteorder: str, budget: _fdt.Budget, facts: dict, errors: list) -> dict:
    """The side's root tree into ``facts``; returns the sub-blobs it lists ({name: phys, blob_size})."""
    try:
        budget.charge(bytes=_size(encoded))
        data = b64decode(encoded)
        facts["fdt"] = {"status": "complete", "size": len(data), "sha256": hashlib.sha256(data).hexdigest()}
        root = root_listing(_fdt.parse(data, budget), byteorder)
        listed = root.pop("listed")
        facts.update(root)
        return listed
    except (_fdt.FdtError, BlobError) as exc:
        status = "truncated" if str(exc).startswith("truncated") else "invalid"
        facts["fdt"].update(status=status, error=str(exc))
        if status == "invalid":  # a truncated out/fdt is what a cold boot exposes
            errors.append({"blob": f"{side}/fdt", "error": str(exc)})
        return {}


def _decode_sub(name: str, listed: dict | None, encoded: str | None, side: str, byteorder: str,
                budget: _fdt.Budget) -> dict:
    """One sub-blob's record: where the root lists it, and what it decodes to; ``error`` where it does not."""
    rec = {"name": name, **(listed or {"phys": None, "blob_size": None})}
    if side == "in" and name == LUO_NAME:
        # LUO consumes and frees its incoming entry early in boot: debugfs then shows freed memory.
        rec.update(format="consumed", note="read the incoming number from the kernel log (liveupdate)")
        encoded = None
    problems = []
    if encoded is not None:
        try:
            data = b64decode(encoded)
            if rec["blob_size"] is not None and rec["blob_size"] != len(data):
                problems.append(f"the root lists blob-size {rec['blob_size']}, the file has {len(data)} bytes")
            rec.update(decode_blob(data, name, byteorder, budget))
        except (_fdt.FdtError, BlobError) as exc:
            problems.append(str(exc))
    if problems:
        rec["error"] = "; ".join(problems)
    return rec


def facts_from_raw(raw: dict, include_raw: bool = False) -> dict:
    """The kho_facts module's raw reads turned into ``ansible_facts.kho``.

    Both sides share one decode budget (_fdt.BUDGET): the facts of a host over it have ``over_budget``, the
    reason, and its task fails.
    """
    budget = _fdt.Budget()
    errors: list = []
    raw = _mapping(raw, "facts", errors)
    byteorder = raw.get("byteorder") or "little"
    if byteorder not in ("little", "big"):
        errors.append({"blob": "facts", "error": f"byteorder {byteorder!r} is neither little nor big; read as little"})
        byteorder = "little"
    facts = {k: v for k, v in raw.items() if k not in ("in", "out")}
    for side in ("out", "in"):
        side_raw = _mapping(raw.get(side), side, [])  # decode_side reports it
        decoded, side_errors = decode_side(raw.get(side), side, byteorder, budget)
        facts[side] = {k: v for k, v in side_raw.items() if k not in ("fdt", "sub_blobs")}
        facts[side].update(decoded)
        errors.extend(side_errors)
    lu = facts.get("liveupdate")
    if isinstance(lu, dict):  # the outgoing entry, decoded here with the other blobs
        facts["liveupdate"] = {**lu, "outgoing": facts["out"]["sub_blobs"].get(LUO_NAME, {}).get("luo")}
    facts["errors"] = errors
    if budget.exceeded:
        facts["over_budget"] = budget.exceeded
    if include_raw:
        facts["raw"] = {}
        for side in ("out", "in"):
            side_raw = _mapping(raw.get(side), side, [])
            if side_raw.get("fdt") is not None:
                facts["raw"][f"{side}/fdt"] = side_raw["fdt"]
            for name, blob in _mapping(side_raw.get("sub_blobs"), side, []).items():
                facts["raw"][f"{side}/sub_fdts/{name}"] = blob
    return facts


def facts_of(answer: dict, include_raw: bool = False) -> tuple:
    """kho_facts' module answer decoded here, as (facts, why): its ``kho_raw`` is taken out of ``answer``.  facts is
    None where the answer has none (the module failed, the host was unreachable, no kho_raw came), why the module's
    message then; where the host's blobs are over the controller's budget, facts are returned and why says so."""
    raw = answer.pop("kho_raw", None)
    if answer.get("failed") or answer.get("unreachable") or raw is None:
        return None, str(answer.get("msg") or "kho_facts returned no facts")
    facts = facts_from_raw(raw, include_raw)
    return facts, facts.get("over_budget")

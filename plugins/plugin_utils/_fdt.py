# Copyright (c) kexec.kho contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Flattened device tree decoding on the controller: a strict check, then pyfdt.

Not a public API.  pyfdt silently skips unknown structure tags, trusts every
offset and returns property values as big-endian 32-bit words, so every blob
is walked here first; values are re-packed to their raw bytes afterwards and
read in the byte order the caller names (KHO writes numbers in CPU order).
"""

from __future__ import annotations

import hashlib
import io
import struct

from ansible_collections.kexec.kho.plugins.module_utils._kho.host import MAX_READ

try:
    from pyfdt.pyfdt import FdtBlobParse, FdtNode, FdtNop, FdtPropertyBytes, FdtPropertyStrings, FdtPropertyWords
    HAS_PYFDT = True
    PYFDT_IMPORT_ERROR = None
except ImportError as exc:  # pragma: no cover - reported by the callers
    HAS_PYFDT = False
    PYFDT_IMPORT_ERROR = exc

FDT_MAGIC = 0xD00DFEED
HEADER = struct.Struct(">10I")
BEGIN_NODE, END_NODE, PROP, NOP, END = 1, 2, 3, 4, 9
MAX_DEPTH = 32
MAX_TOKENS = 65536
MAX_NAME = 255  # node and property names; the spec says 31, KHO's are shorter still
# Summarised (size, sha256, first bytes), not expanded: a longer property value, a longer list of strings,
# a longer name (KHO's values are at most 16 bytes, its names a few words).
MAX_VALUE = 1024
MAX_STRINGS = 64
MAX_NAME_SHOWN = 64
MAX_RSVMAP = 256  # memory reservation entries (KHO writes none); pyfdt's cost grows with their square
# pyfdt compares each new child of a node (property or node) with every earlier one: the sum of
# those comparisons over the blob is bounded, so that no blob costs it more than a fraction of a second.
MAX_SIBLING_PAIRS = 600_000
PRINTABLE = frozenset(range(0x20, 0x7F))
# What decoding everything one host returned may cost the controller, summed over its blobs: sized so that the
# worst host within every limit takes well under 1 s and 64 MB (bench/controller_bench.py, docs/bench-decode.md).
BUDGET = {"blobs": 64, "bytes": 32 << 20, "tokens": 8192, "pairs": MAX_SIBLING_PAIRS, "name_bytes": 256 << 10,
          "value_bytes": 256 << 10}
WALK_COSTS = ("tokens", "pairs", "name_bytes", "value_bytes")  # what check() measures as it walks a blob
BUDGET_UNITS = {"blobs": "sub-blobs", "bytes": "bytes of blobs", "tokens": "FDT structure tokens",
                "pairs": "sibling pairs to compare", "name_bytes": "bytes of node and property names",
                "value_bytes": "bytes of property values to expand"}


class FdtError(ValueError):
    """A blob that is not a well-formed flattened device tree."""


class OverBudget(FdtError):
    """More decoding than one host may cost the controller."""


class Budget:
    """The decode budget of one host: each charge adds to what was spent; past a limit it is spent for good."""

    def __init__(self, **limits):
        self.limits = {**BUDGET, **limits}
        self.spent = dict.fromkeys(self.limits, 0)
        self.exceeded: str | None = None

    def charge(self, **costs: int) -> None:
        if self.exceeded:
            raise OverBudget(f"not decoded: the host's decode budget is spent ({self.exceeded})")
        for what, amount in costs.items():
            self.spent[what] += amount
            if self.spent[what] > self.limits[what]:
                self.exceeded = (f"more than {self.limits[what]:,} {BUDGET_UNITS[what]} in one host's blobs "
                                 "(the controller's decode budget per host)")
                raise OverBudget(f"refused: {self.exceeded}")

    def allowance(self, what: str) -> int:
        """The most of ``what`` one more walk may take: one past what is left, so that a walk needing more is over."""
        return max(self.limits[what] - self.spent[what], 0) + 1


def is_fdt(data: bytes) -> bool:
    return len(data) >= 4 and struct.unpack_from(">I", data)[0] == FDT_MAGIC


def _cstring(data: bytes, start: int, end: int, what: str) -> bytes:
    """A name: NUL-terminated within MAX_NAME bytes, printable; looked at no further than that."""
    stop = data.find(b"\0", start, min(end, start + MAX_NAME + 1))
    if stop < 0:
        raise FdtError(f"{what} at offset {start} is not NUL-terminated within {MAX_NAME} bytes inside its block")
    text = data[start:stop]
    if not PRINTABLE.issuperset(text):
        raise FdtError(f"{what} at offset {start} has non-printable bytes")
    return text


def summary(raw: bytes) -> dict:
    """What a property value too long to expand is reported as."""
    return {"size": len(raw), "sha256": hashlib.sha256(raw).hexdigest(), "head": raw[:32].hex()}


def shown_name(name: str) -> str:
    """A node or property name as the facts show it: a long one by its start, length and hash."""
    if len(name) <= MAX_NAME_SHOWN:
        return name
    digest = hashlib.sha256(name.encode()).hexdigest()[:16]
    return f"{name[:32]}... ({len(name)} bytes, sha256 {digest})"


def check(data: bytes, max_depth: int = MAX_DEPTH, cost: dict | None = None, max_tokens: int = MAX_TOKENS) -> dict:
    """Validate a blob's whole structure without trusting any number in it.

    Returns the header, with ``rsvmap_end``, ``long_values`` (where each property value longer than
    MAX_VALUE stands) and what parsing it costs (WALK_COSTS: ``tokens``, ``pairs``, ``name_bytes``,
    ``value_bytes``).  Raises FdtError naming the first thing that is wrong, after at most ``max_tokens`` tokens.
    ``cost``, where given, is kept up to date as the walk goes: it says what a walk that failed had spent.
    """
    cost = dict.fromkeys(WALK_COSTS, 0) if cost is None else cost
    cost.update(dict.fromkeys(WALK_COSTS, 0))
    if len(data) > MAX_READ:
        raise FdtError(f"{len(data)} bytes is more than the {MAX_READ} a host may send for one blob")
    if len(data) < HEADER.size:
        raise FdtError(f"{len(data)} bytes is shorter than an FDT header ({HEADER.size})")
    names = ("magic", "totalsize", "off_dt_struct", "off_dt_strings", "off_mem_rsvmap",
             "version", "last_comp_version", "boot_cpuid_phys", "size_dt_strings", "size_dt_struct")
    hdr = dict(zip(names, HEADER.unpack_from(data)))
    if hdr["magic"] != FDT_MAGIC:
        raise FdtError(f"bad magic 0x{hdr['magic']:08x} (want 0x{FDT_MAGIC:08x})")
    if hdr["totalsize"] > len(data):
        raise FdtError(f"truncated: header totalsize {hdr['totalsize']}, {len(data)} bytes read")
    if hdr["version"] < 16 or hdr["version"] > 17 or hdr["last_comp_version"] > 16:
        raise FdtError(f"unsupported version {hdr['version']} (last compatible {hdr['last_comp_version']})")
    total = hdr["totalsize"]
    s_off, s_size = hdr["off_dt_struct"], hdr["size_dt_struct"]
    t_off, t_size = hdr["off_dt_strings"], hdr["size_dt_strings"]
    for what, off, size in (("structure block", s_off, s_size), ("strings block", t_off, t_size)):
        if off < HEADER.size or off + size > total:
            raise FdtError(f"{what} [{off}, {off + size}) lies outside the blob (totalsize {total})")
    if s_off % 4 or s_size % 4:
        raise FdtError("structure block is not 4-byte aligned")
    rsv = hdr["off_mem_rsvmap"]
    while True:
        if rsv < HEADER.size or rsv + 16 > total:
            raise FdtError("memory reservation map runs past the blob")
        if struct.unpack_from(">QQ", data, rsv) == (0, 0):
            break
        rsv += 16
        if rsv - hdr["off_mem_rsvmap"] > 16 * MAX_RSVMAP:
            raise FdtError(f"memory reservation map has more than {MAX_RSVMAP} entries")
    hdr["rsvmap_end"] = rsv + 16
    hdr["long_values"] = _walk(data, (s_off, s_off + s_size), (t_off, t_off + t_size), max_depth, cost, max_tokens)
    hdr.update(cost)
    return hdr


def _sibling_pairs(siblings: set, pairs: int) -> int:
    if pairs + len(siblings) > MAX_SIBLING_PAIRS:
        raise FdtError(f"too many siblings: more than {MAX_SIBLING_PAIRS} sibling pairs to compare "
                       f"(about {int((2 * MAX_SIBLING_PAIRS) ** 0.5)} children under one node)")
    return len(siblings)


def _walk(data: bytes, block: tuple, strings: tuple, max_depth: int, cost: dict, max_tokens: int) -> list:
    """Check the structure block [pos, end); returns the (node path, name, length field offset, length) of each long
    value.  ``cost`` counts, as the walk goes, the cost of the parse: tokens, sibling pairs, the bytes of names
    pyfdt reads (one per node and property) and of the values it expands."""
    (pos, end), (t_off, t_end) = block, strings
    depth = 0
    seen_root = False
    siblings: list[set] = []
    path: list = []
    long_values = []
    names: dict = {}  # property names by string offset: each one validated once
    for token in range(max_tokens):
        cost["tokens"] = token + 1
        if pos + 4 > end:
            raise FdtError(f"structure block ends at offset {end} without FDT_END")
        tag = struct.unpack_from(">I", data, pos)[0]
        pos += 4
        if tag == BEGIN_NODE:
            if depth == 0 and seen_root:
                raise FdtError(f"second root node at offset {pos - 4}")
            name = _cstring(data, pos, end, "node name")
            if depth and not name:
                raise FdtError(f"unnamed child node at offset {pos}")
            if depth and name in siblings[-1]:
                raise FdtError(f"duplicate node name {name.decode()!r}")
            if depth:
                cost["pairs"] += _sibling_pairs(siblings[-1], cost["pairs"])
                siblings[-1].add(name)
                path.append(shown_name(name.decode()))
            cost["name_bytes"] += len(name)
            pos += (len(name) + 4) & ~3
            depth += 1
            seen_root = True
            if depth > max_depth:
                raise FdtError(f"nesting deeper than {max_depth}")
            siblings.append(set())
        elif tag == END_NODE:
            if depth == 0:
                raise FdtError(f"FDT_END_NODE without an open node at offset {pos - 4}")
            depth -= 1
            siblings.pop()
            if depth:
                path.pop()
        elif tag == PROP:
            if depth == 0:
                raise FdtError(f"property outside any node at offset {pos - 4}")
            if pos + 8 > end:
                raise FdtError(f"property header at offset {pos} runs past the structure block")
            length, nameoff = struct.unpack_from(">II", data, pos)
            pos += 8
            if pos + length > end:
                raise FdtError(f"property of {length} bytes at offset {pos} runs past the structure block")
            if t_off + nameoff >= t_end:
                raise FdtError(f"property name offset {nameoff} lies outside the strings block")
            name = names.get(nameoff)
            if name is None:
                name = names[nameoff] = _cstring(data, t_off + nameoff, t_end, "property name")
            if not name:
                raise FdtError(f"empty property name at offset {pos - 8}")
            if name in siblings[-1]:
                raise FdtError(f"duplicate property or node name {name.decode()!r}")
            cost["pairs"] += _sibling_pairs(siblings[-1], cost["pairs"])
            siblings[-1].add(name)
            cost["name_bytes"] += len(name)
            if length > MAX_VALUE:
                long_values.append((tuple(path), shown_name(name.decode()), pos - 8, length))
            else:
                cost["value_bytes"] += length
            pos += (length + 3) & ~3
        elif tag == NOP:
            continue
        elif tag == END:
            if depth or not seen_root:
                raise FdtError("FDT_END before the root node was closed")
            return long_values
        else:
            raise FdtError(f"unknown structure tag 0x{tag:x} at offset {pos - 4}")
    raise FdtError(f"more than {max_tokens} structure tokens")


def _raw(prop) -> bytes:
    if isinstance(prop, FdtPropertyWords):
        return b"".join(struct.pack(">I", w) for w in prop.words)
    if isinstance(prop, FdtPropertyStrings):
        return b"".join(s.encode("ascii") + b"\0" for s in prop.strings)
    if isinstance(prop, FdtPropertyBytes):
        return bytes(b & 0xFF for b in prop.bytes)
    return b""


def value(raw: bytes, byteorder: str):
    """A property's most likely meaning: flag, string(s), number(s) or hex; a summary when long."""
    if not raw:
        return True
    if len(raw) > MAX_VALUE:
        return summary(raw)
    strings = raw[:-1].split(b"\0") if raw.endswith(b"\0") else ()
    if strings and all(s and PRINTABLE.issuperset(s) for s in strings):
        if len(strings) > MAX_STRINGS:
            return summary(raw)
        return strings[0].decode("ascii") if len(strings) == 1 else [s.decode("ascii") for s in strings]
    if len(raw) in (4, 8):
        return int.from_bytes(raw, byteorder)
    if len(raw) % 4 == 0:
        return [int.from_bytes(raw[i:i + 4], byteorder) for i in range(0, len(raw), 4)]
    return "0x" + raw.hex()


def _tree(node) -> dict:
    props: dict = {}
    nodes: dict = {}
    for item in node:
        if isinstance(item, FdtNop):
            continue
        if isinstance(item, FdtNode):
            nodes[shown_name(item.get_name())] = _tree(item)
        else:
            props[shown_name(item.get_name())] = _raw(item)
    return {"properties": props, "nodes": nodes}


def _slim(data: bytes, hdr: dict) -> bytes:
    """The blob with each long property value cut to nothing, so that pyfdt never expands it into ints."""
    s_off, s_end = hdr["off_dt_struct"], hdr["off_dt_struct"] + hdr["size_dt_struct"]
    pieces, pos = [], s_off
    for _path, _name, len_at, length in hdr["long_values"]:
        pieces += [data[pos:len_at], struct.pack(">I", 0), data[len_at + 4:len_at + 8]]
        pos = len_at + 8 + ((length + 3) & ~3)
    pieces.append(data[pos:s_end])
    structure = b"".join(pieces)
    rsvmap = data[hdr["off_mem_rsvmap"]:hdr["rsvmap_end"]]
    strings = data[hdr["off_dt_strings"]:hdr["off_dt_strings"] + hdr["size_dt_strings"]]
    r_off = HEADER.size
    st_off = r_off + len(rsvmap)
    t_off = st_off + len(structure)
    total = t_off + len(strings)
    header = HEADER.pack(FDT_MAGIC, total, st_off, t_off, r_off, hdr["version"], hdr["last_comp_version"],
                         hdr["boot_cpuid_phys"], len(strings), len(structure))
    return header + rsvmap + structure + strings


def parse(data: bytes, budget: Budget | None = None) -> dict:
    """Check then parse a blob into {'properties': {name: raw bytes}, 'nodes': {...}}, charged to ``budget``
    (the host's; by default one of the blob's own) as the walk goes, and before pyfdt runs."""
    if not HAS_PYFDT:
        raise FdtError(f"the controller lacks pyfdt: {PYFDT_IMPORT_ERROR}")
    budget = budget or Budget()
    budget.charge()  # a spent budget refuses before the walk
    cost: dict = {}
    try:
        hdr = check(data, cost=cost, max_tokens=min(MAX_TOKENS, budget.allowance("tokens")))
    finally:  # a walk that failed is charged as far as it went; one stopped at the allowance is over the budget
        budget.charge(**cost)
    blob = _slim(data, hdr) if hdr["long_values"] else data[:hdr["totalsize"]]
    try:
        root = FdtBlobParse(io.BytesIO(blob)).to_fdt().get_rootnode()
    except Exception as exc:  # pyfdt raises bare Exception
        raise FdtError(f"pyfdt could not parse it: {exc}") from exc
    tree = _tree(root)
    for path, name, len_at, length in hdr["long_values"]:
        node = tree
        for part in path:
            node = node["nodes"][part]
        node["properties"][name] = data[len_at + 8:len_at + 8 + length]
    return tree


def readable(tree: dict, byteorder: str = "little") -> dict:
    """Turn parse()'s raw property bytes into values, recursively."""
    return {
        "properties": {k: value(v, byteorder) for k, v in tree["properties"].items()},
        "nodes": {k: readable(v, byteorder) for k, v in tree["nodes"].items()},
    }

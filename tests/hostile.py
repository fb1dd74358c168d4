"""Blobs a broken or compromised host could hand the controller, for the decoder's tests and the bench.

Each case is built here (no fixture file: the big ones are megabytes) and says what must happen:
``refused`` (an error naming the blob) or ``decoded``.  Written without pyfdt, in linear time.
"""

from __future__ import annotations

import struct

MAGIC = 0xD00DFEED


def _pad(data: bytes) -> bytes:
    return data + b"\0" * (-len(data) % 4)


def flat(children: int, prop_name: bytes, value: bytes, root_props: tuple = ()) -> bytes:
    """A root with ``children`` nodes, each with one property named ``prop_name`` (one shared string)."""
    strings = bytearray(prop_name + b"\0")
    body = bytearray(struct.pack(">I", 1) + _pad(b"\0"))
    for name, val in root_props:
        body += struct.pack(">III", 3, len(val), len(strings)) + _pad(val)
        strings += name + b"\0"
    prop = struct.pack(">III", 3, len(value), 0) + _pad(value)
    for i in range(children):
        body += struct.pack(">I", 1) + _pad(b"n%d\0" % i) + prop + struct.pack(">I", 2)
    body += struct.pack(">II", 2, 9)
    return wrap(bytes(body), bytes(strings))


def wrap(structure: bytes, strings: bytes, rsvmap: bytes = b"\0" * 16, totalsize: int | None = None) -> bytes:
    off_struct = 40 + len(rsvmap)
    off_strings = off_struct + len(structure)
    total = off_strings + len(strings)
    header = struct.pack(">10I", MAGIC, totalsize if totalsize is not None else total, off_struct, off_strings, 40,
                         17, 16, 0, len(strings), len(structure))
    return header + rsvmap + structure + strings


def deep(levels: int) -> bytes:
    body = b"".join(struct.pack(">I", 1) + _pad(b"d\0" if i else b"\0") for i in range(levels))
    return wrap(body + struct.pack(">I", 2) * levels + struct.pack(">I", 9), b"")


def nops(count: int) -> bytes:
    return wrap(struct.pack(">I", 1) + _pad(b"\0") + struct.pack(">I", 4) * count + struct.pack(">II", 2, 9), b"")


def long_rsvmap(entries: int) -> bytes:
    return wrap(struct.pack(">I", 1) + _pad(b"\0") + struct.pack(">II", 2, 9), b"",
                rsvmap=struct.pack(">QQ", 0x1000, 0x1000) * entries + b"\0" * 16)


MIB = 1 << 20
# name: (what it is, builder, outcome)
CASES = {
    "shared_3mb_name": ("one 3 MB property name shared by 1,000 nodes",
                        lambda: flat(1000, b"p" * (3 * MIB), b"x"), "refused"),
    "shared_9mb_name": ("one 9.5 MB property name shared by 21,844 nodes",
                        lambda: flat(21844, b"p" * (19 * MIB // 2), b"x"), "refused"),
    "one_10mb_value": ("one 10 MB property value", lambda: flat(1, b"data", b"\x01" * (10 * MIB)), "decoded"),
    "many_nodes": ("21,844 sibling nodes of one 4-byte property each", lambda: flat(21844, b"v", b"\0\0\0\1"),
                   "refused"),
    "1000_nodes": ("1,000 sibling nodes (the bench's synthetic tree)", lambda: flat(1000, b"v", b"\0\0\0\1"), "decoded"),
    "1090_nodes": ("1,090 sibling nodes, just inside the sibling budget", lambda: flat(1090, b"v", b"\0\0\0\1"),
                   "decoded"),
    "claims_4gib": ("a header claiming 4 GiB over 56 bytes",
                    lambda: wrap(b"", b"", totalsize=0xFFFFFFFF), "refused"),
    "over_16mib": ("17 MiB, over the host-side read cap", lambda: flat(1, b"data", b"\0" * (17 * MIB)), "refused"),
    "deep": ("nodes nested 10,000 deep", lambda: deep(10000), "refused"),
    "nops": ("70,000 FDT_NOP tokens", lambda: nops(70000), "refused"),
    "long_rsvmap": ("a memory reservation map of 500,000 entries", lambda: long_rsvmap(500000), "refused"),
}

"""Blobs a broken or compromised host could hand the controller, for the decoder's tests and the bench.

Each case is built here (no fixture file: the big ones are megabytes) and says what must happen:
``refused`` (an error naming the blob) or ``decoded``.  Written without pyfdt, in linear time.
"""

from __future__ import annotations

import base64
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


def nested(fanout: tuple, name_len: int = 0, leaf_props: tuple = ()) -> bytes:
    """Nodes ``fanout[0]`` wide under the root, ``fanout[1]`` under each of those, and so on; names padded to
    ``name_len`` bytes; each leaf holds ``leaf_props`` ((name, value) pairs, each name one shared string)."""
    strings = bytearray()
    props = bytearray()
    for name, val in leaf_props:
        props += struct.pack(">III", 3, len(val), len(strings)) + _pad(val)
        strings += name + b"\0"
    leaf = bytes(props)
    body = bytearray(struct.pack(">I", 1) + _pad(b"\0"))

    def level(depth: int) -> None:
        if depth == len(fanout):
            body.extend(leaf)
            return
        for i in range(fanout[depth]):
            body.extend(struct.pack(">I", 1) + _pad(b"n%d" % i + b"x" * max(0, name_len - len(b"n%d" % i)) + b"\0"))
            level(depth + 1)
            body.extend(struct.pack(">I", 2))
    level(0)
    body += struct.pack(">II", 2, 9)
    return wrap(bytes(body), bytes(strings))


def deep(levels: int) -> bytes:
    body = b"".join(struct.pack(">I", 1) + _pad(b"d\0" if i else b"\0") for i in range(levels))
    return wrap(body + struct.pack(">I", 2) * levels + struct.pack(">I", 9), b"")


def nops(count: int) -> bytes:
    return wrap(struct.pack(">I", 1) + _pad(b"\0") + struct.pack(">I", 4) * count + struct.pack(">II", 2, 9), b"")


def fails_late(count: int) -> bytes:
    """A root node, ``count`` FDT_NOP tokens, then an unknown tag: every check passes until the walk's end."""
    return wrap(struct.pack(">I", 1) + _pad(b"\0") + struct.pack(">I", 4) * count + struct.pack(">I", 0x77), b"")


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


def _props(count: int, value: bytes, name_len: int = 0) -> tuple:
    return tuple((b"%d" % i + b"p" * max(0, name_len - len(b"%d" % i)), value) for i in range(count))


def host(*blobs: bytes, copies: int = 1) -> dict:
    """What kho_facts hands facts_from_raw for a host whose outgoing sub-blobs are ``copies`` of ``blobs``."""
    encoded = [base64.b64encode(blob).decode() for blob in blobs] * copies
    return {"supported": True, "byteorder": "little", "out": {"fdt": None, "sub_blobs": {
        f"blob{i}": text for i, text in enumerate(encoded)}}}


def names_and_values() -> bytes:
    """7,500 properties of 16 bytes with 32-byte names."""
    return nested((125,), leaf_props=_props(60, b"\1\0\0\0" * 4, 32))


def values_2kb() -> bytes:
    """7,680 properties of 2 KB each (15.8 MB)."""
    return nested((64,), leaf_props=_props(120, b"\1\0\0\0" * 512))


# Hosts whose blobs stay inside every per-blob limit and still cost the controller (issue 26): the raw dict
# facts_from_raw gets from each.  name: (what it is, builder, outcome).  Before the per-host budget (fdt.BUDGET)
# they took seconds and hundreds of MB; now each is decoded or refused within 1 s and 64 MB.
HOSTS = {
    "shared_long_names": ("57,600 properties sharing sixteen 255-byte names (739 KB), three copies",
                          lambda: host(nested((60, 60), leaf_props=_props(16, b"", 255)), copies=3), "refused"),
    "values_2kb": ("7,680 properties of 2 KB each (15.8 MB): just inside the token budget", lambda: host(values_2kb()),
                   "decoded"),
    "values_2kb_twice": ("the same, twice", lambda: host(values_2kb(), copies=2), "refused"),
    "binary_4kb": ("3,840 binary values of 4 KB (4,095 bytes) each (15.8 MB)",
                   lambda: host(nested((32,), leaf_props=_props(120, b"\1" * 4095))), "decoded"),
    "long_node_names": ("30,783 nodes with 255-byte names (8.2 MB)",
                        lambda: host(nested((31, 31, 31), name_len=255)), "refused"),
    "names_and_values": ("7,500 properties of 16 bytes with 32-byte names: just inside the budgets",
                         lambda: host(names_and_values()), "decoded"),
    "worst_inside": ("the 2 KB values above and a binary sub-blob of 15.5 MiB: tokens, pairs and bytes nearly spent",
                     lambda: host(values_2kb(), b"\1" * (31 << 19)), "decoded"),
    "many_sub_blobs": ("10,000 sub-blobs of 1 KB", lambda: host(b"\1" * 1024, copies=10_000), "refused"),
    "many_mib": ("twelve 15 MB binary sub-blobs (180 MB)", lambda: host(b"\1" * (15 << 20), copies=12), "refused"),
    # issue 37: walks that failed were not charged (3.9 s, no over_budget)
    "failing_late": ("64 sub-blobs that each fail after 65,000 tokens", lambda: host(fails_late(65_000), copies=64),
                     "refused"),
}

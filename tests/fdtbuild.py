"""A minimal FDT writer for tests: {'props': {name: bytes}, 'nodes': {name: tree}} to a blob.

Written independently of pyfdt (which is under test) and cross-checked against dtc.
"""

from __future__ import annotations

import struct


def u64(value: int, byteorder: str = "little") -> bytes:
    return value.to_bytes(8, byteorder)


def u32(value: int, byteorder: str = "little") -> bytes:
    return value.to_bytes(4, byteorder)


def s(text: str) -> bytes:
    return text.encode() + b"\0"


def _pad(data: bytes) -> bytes:
    return data + b"\0" * (-len(data) % 4)


def build(tree: dict, name: str = "") -> bytes:
    strings: dict = {}
    table = bytearray()

    def nameoff(prop: str) -> int:
        if prop not in strings:
            strings[prop] = len(table)
            table.extend(prop.encode() + b"\0")
        return strings[prop]

    def node(t: dict, n: str) -> bytes:
        out = struct.pack(">I", 1) + _pad(n.encode() + b"\0")
        for prop, value in t.get("props", {}).items():
            out += struct.pack(">III", 3, len(value), nameoff(prop)) + _pad(value)
        for child, sub in t.get("nodes", {}).items():
            out += node(sub, child)
        return out + struct.pack(">I", 2)

    dt_struct = node(tree, name) + struct.pack(">I", 9)
    rsvmap = b"\0" * 16
    off_rsv = 40
    off_struct = off_rsv + len(rsvmap)
    off_strings = off_struct + len(dt_struct)
    total = off_strings + len(table)
    header = struct.pack(">10I", 0xD00DFEED, total, off_struct, off_strings, off_rsv, 17, 16, 0,
                         len(table), len(dt_struct))
    return header + rsvmap + dt_struct + bytes(table)


def kho_root(version: int, blobs: dict, byteorder: str = "little") -> bytes:
    """A KHO root tree of the given version; blobs = {name: (phys, size)}."""
    nodes = {}
    for child, (phys, size) in blobs.items():
        props = {"fdt": u64(phys, byteorder)} if version == 1 else {"preserved-data": u64(phys, byteorder)}
        if version >= 3:
            props["blob-size"] = u64(size, byteorder)
        nodes[child] = {"props": props}
    return build({"props": {"compatible": s(f"kho-v{version}"), "preserved-memory-map": u64(0x1970000, byteorder)},
                  "nodes": nodes})


def memblock(regions: dict, byteorder: str = "little") -> bytes:
    return build({"props": {"compatible": s("memblock-v1")}, "nodes": {
        label: {"props": {"compatible": s("reserve-mem-v1"), "start": u64(start, byteorder),
                          "size": u64(size, byteorder)}}
        for label, (start, size) in regions.items()}})


def metadata(release: str, count: int, byteorder: str = "little", version: int = 1) -> bytes:
    fmt = ("<" if byteorder == "little" else ">") + "I65sI"
    return struct.pack(fmt, version, release.encode(), count)

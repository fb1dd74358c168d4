# Copyright (c) kexec.kho contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
"""kexec-metadata v1, the kernel's word of the kernel before it: its one home.  Not a public API.

A packed struct in the kernel's byte order: u32 version, char previous_release[65] (NUL-padded), u32 kexec_count.
The controller decodes the incoming one from kho_facts' blobs (plugin_utils/_decode.py); the host reads the
outgoing one (what this kernel sends) to arm its own return (self_return.py, whose script reads the same offsets).
"""

from __future__ import annotations

import struct

FIELDS = "I65sI"
RELEASE_AT, RELEASE_LEN, COUNT_AT = 4, 65, 69
SIZE = struct.calcsize("<" + FIELDS)  # 73


class MetadataError(ValueError):
    """Bytes that are not kexec-metadata v1."""


def decode(data: bytes, byteorder: str = "little") -> dict:
    """version, previous_release and kexec_count; MetadataError names what does not fit."""
    if byteorder not in ("little", "big"):
        raise ValueError(f"byteorder must be 'little' or 'big', not {byteorder!r}")
    if len(data) < 4:
        raise MetadataError(f"{len(data)} bytes is too short for kexec-metadata")
    version = int.from_bytes(data[:4], byteorder)
    if version != 1:
        raise MetadataError(f"unknown kexec-metadata version {version} (known: 1)")
    if len(data) != SIZE:
        raise MetadataError(f"kexec-metadata v1 is {SIZE} bytes, got {len(data)}")
    version, release, count = struct.unpack(("<" if byteorder == "little" else ">") + FIELDS, data)
    return {"version": version, "previous_release": release.split(b"\0", 1)[0].decode("ascii", "replace"),
            "kexec_count": count}


def read(path: str, byteorder: str = "little") -> dict:
    """The file's metadata (debugfs: read through, its size says 0); OSError or MetadataError where it cannot be."""
    with open(path, "rb") as fh:
        return decode(fh.read(SIZE + 1), byteorder)

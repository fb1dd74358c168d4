"""Synthetic x86 bzImages for tests: a real setup header (HdrS, the version string, the payload's offset and length)
around a compressed payload that carries the strings a kernel of the kind described would carry."""

from __future__ import annotations

import gzip
import lzma
import struct

LAB_TOKENS = ("kho-v4", "memblock-v1", "reserve-mem-v1", "luo-v5", "memfd-v2")


def kernel_payload(tokens=LAB_TOKENS, params=("kho", "kho_scratch"), config: str | None = None) -> bytes:
    body = b"\x00text\x00" + b"".join(b"\x00" + t.encode() + b"\x00" for t in tokens)
    body += b"".join(b"\x00" + p.encode() + b"\x00" for p in params)
    if config is not None:
        body += b"IKCFG_ST" + gzip.compress(config.encode()) + b"IKCFG_ED"
    return body + b"\x00" * 64


def bzimage(release: str = "7.3.4", compression: str = "xz", **kw) -> bytes:
    payload = kernel_payload(**kw)
    packed = {"xz": lambda d: lzma.compress(d, format=lzma.FORMAT_XZ), "gzip": gzip.compress,
              "lz4": lambda d: b"\x02\x21\x4c\x18" + d}[compression](payload)
    setup_sects = 1
    head = bytearray(0x400)
    head[0x1F1] = setup_sects
    head[0x202:0x206] = b"HdrS"
    version = f"{release} (test@kimage) #1 SMP\x00".encode()
    head[0x300:0x300 + len(version)] = version
    struct.pack_into("<H", head, 0x20E, 0x300 - 0x200)
    struct.pack_into("<II", head, 0x248, 0x10, len(packed))
    code = b"\x00" * 0x10 + packed
    return bytes(head) + code


CONFIG = "CONFIG_KEXEC_HANDOVER=y\nCONFIG_LIVEUPDATE=y\n# CONFIG_LIVEUPDATE_MEMFD is not set\n"  # no memfd handler


def write(tmp_path, name="vmlinuz", **kw) -> str:
    """A bzimage (bzimage(**kw)) written as tmp_path/name; its path."""
    path = tmp_path / name
    path.write_bytes(bzimage(**kw))
    return str(path)

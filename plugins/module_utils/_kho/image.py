# Copyright (c) kexec.kho contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
"""What a kernel image understands, read from the image itself: its release (the bzImage header), the KHO format
versions it accepts and the parameters it parses (its decompressed payload), its config.  Not a public API.

A kernel accepts a KHO blob only when its own code carries that blob's compatible string (``kho-v4``,
``memblock-v1``, ``luo-v5``, ``memfd-v2`` ...); a parameter it does not parse is ignored.  Both are strings in the
decompressed kernel, so they are looked for there: bounded reads, decompressed with what the host's Python has
(gzip, xz/lzma; zstd where a module offers it).  Anything else is ``unknown``, never guessed.
"""

from __future__ import annotations

import io
import os
import re
import struct
import zlib

from ansible_collections.kexec.kho.plugins.module_utils._kho import paths

try:
    import lzma
except ImportError:  # a Python built without liblzma: xz images are then unknown, never an error
    lzma = None

MAX_IMAGE = 256 << 20  # bytes read from an image file at most
MAX_KERNEL = 512 << 20  # bytes of decompressed kernel at most
FAMILIES = ("kho", "memblock", "reserve-mem", "luo", "memfd")
# A compatible token: a family and its version, alone or in a composite (``kho-v4;radix-v1``).
TOKEN = re.compile(rb"(?<![A-Za-z0-9_.-])((?:kho|memblock|reserve-mem|luo|memfd)-v\d{1,3})(?=[\x00;])")
PARAMS = re.compile(rb"\x00(kho_scratch|kho_bootmem)=?\x00")
IKCONFIG = (b"IKCFG_ST", b"IKCFG_ED")
CONFIG_KEYS = ("CONFIG_KEXEC_HANDOVER", "CONFIG_LIVEUPDATE", "CONFIG_LIVEUPDATE_MEMFD")


def kernel_tokens(kernel: bytes) -> list:
    """The compatible strings (TOKEN) in a decompressed kernel, sorted.

    Each family's name is found with bytes.find (memchr) and TOKEN is tried only there: the same answer as
    TOKEN.findall, which tries its lookbehind at every byte (3.4 s against 0.06 s for a 12 MB kernel in the lab's
    emulated guest).
    """
    found = set()
    for name in FAMILIES:
        needle = name.encode("ascii") + b"-v"
        at = kernel.find(needle)
        while at >= 0:
            match = TOKEN.match(kernel, at)  # the lookbehind still sees the byte before ``at``
            if match:
                found.add(match.group(1).decode("ascii"))
            at = kernel.find(needle, at + 1)
    return sorted(found)


def compatible_tokens(value) -> list:
    """The tokens of a compatible, composite or not: 'kho-v4;radix-v1' -> ['kho-v4', 'radix-v1']."""
    return [t.strip() for t in str(value or "").split(";") if t.strip()]


def family(token: str) -> str:
    return token.rsplit("-v", 1)[0]


def _zstd(data: bytes) -> bytes | None:
    """The first frame, at most MAX_KERNEL bytes of it, with Python 3.14's compression.zstd or zstandard; None else.
    (A bzImage follows the frame with its 4-byte size, so only one frame is read.)"""
    for name in ("compression.zstd", "zstandard"):
        try:
            mod = __import__(name, fromlist=["_"])
        except ImportError:
            continue
        try:
            if name == "compression.zstd":
                return mod.ZstdDecompressor().decompress(data, max_length=MAX_KERNEL)
            reader = mod.ZstdDecompressor().stream_reader(io.BytesIO(data), read_across_frames=False)
            return reader.read(MAX_KERNEL)
        except Exception:  # pylint: disable=broad-except  # either module's own error type: unreadable, not a crash
            return None
    return None


def decompress(payload: bytes) -> tuple:
    """(kernel bytes, compression name), or (None, why) where the host cannot read it."""
    try:
        if payload.startswith(b"\x1f\x8b"):
            return zlib.decompressobj(16 + zlib.MAX_WBITS).decompress(payload, MAX_KERNEL), "gzip"
        if payload.startswith(b"\xfd7zXZ\x00") or payload.startswith(b"\x5d\x00\x00"):
            if lzma is None:
                return None, "xz, which this host's Python cannot read (no lzma module)"
            return lzma.LZMADecompressor().decompress(payload, max_length=MAX_KERNEL), "xz"
        if payload.startswith(b"\x28\xb5\x2f\xfd"):
            data = _zstd(payload)
            return (data, "zstd") if data is not None else (None, "zstd, which this host's Python cannot read")
    except (zlib.error, ValueError, EOFError, MemoryError, *((lzma.LZMAError,) if lzma else ())) as exc:
        return None, f"its payload does not decompress: {exc}"
    return None, f"a payload compressed as {payload[:4].hex()} (not gzip, xz or zstd)"


def bzimage_parts(data: bytes) -> tuple:
    """(release, payload bytes) of an x86 bzImage; ValueError where it is not one."""
    if data[0x202:0x206] != b"HdrS":
        raise ValueError("not an x86 bzImage (no HdrS setup header)")
    if len(data) < 0x250:
        raise ValueError("a bzImage header too short to say where its payload is")
    setup_sects = data[0x1F1] or 4
    (version_ptr,) = struct.unpack_from("<H", data, 0x20E)
    release = None
    if version_ptr:
        raw = data[0x200 + version_ptr:0x200 + version_ptr + 128].split(b"\0", 1)[0]
        release = raw.decode("ascii", "replace").split(" ", 1)[0] or None
    offset, length = struct.unpack_from("<II", data, 0x248)
    start = (setup_sects + 1) * 512 + offset
    if not length or start + length > len(data):
        raise ValueError("the bzImage header points its payload outside the file")
    return release, data[start:start + length]


def embedded_config(kernel: bytes) -> dict | None:
    start = kernel.find(IKCONFIG[0])
    end = kernel.find(IKCONFIG[1], start + 8) if start >= 0 else -1
    if start < 0 or end < 0:
        return None
    try:
        text = zlib.decompressobj(16 + zlib.MAX_WBITS).decompress(kernel[start + 8:end], 4 << 20).decode("utf-8", "replace")
    except (OSError, EOFError, zlib.error):
        return None
    return config_of(text)


def config_of(text: str) -> dict:
    found = dict(re.findall(r"^(CONFIG_\w+)=(\w+)$", text, re.M))
    return {k: found.get(k, "n") for k in CONFIG_KEYS}


def _read(path: str, limit: int = MAX_IMAGE) -> bytes:
    with open(path, "rb") as fh:
        data = fh.read(limit + 1)
    if len(data) > limit:
        raise ValueError(f"larger than {limit} bytes")
    return data


def inspect(path: str, boot: str = paths.BOOT) -> dict:
    """The image's release, compression, the compatibles and parameters it knows, and its config.

    ``readable`` false (with ``why``) where the payload cannot be read: then only the header's release and a
    /boot/config-REL, where present, are known.
    """
    rec = {"path": path, "release": None, "compression": None, "readable": False, "why": None,
           "compatibles": [], "params": [], "config": None, "config_source": None}
    try:
        release, payload = bzimage_parts(_read(path))
        rec["release"] = release
        kernel, how = decompress(payload)
    except (OSError, ValueError) as exc:
        kernel, how = None, str(exc)
    if kernel is None:
        rec["why"] = how
    else:
        rec.update(readable=True, compression=how,
                   compatibles=kernel_tokens(kernel),
                   params=sorted({m.decode() for m in PARAMS.findall(kernel)}))
        rec["config"], rec["config_source"] = embedded_config(kernel), "embedded"
    if rec["config"] is None and rec["release"]:
        config = os.path.join(boot, f"config-{rec['release']}")
        try:
            rec["config"], rec["config_source"] = config_of(_read(config, 4 << 20).decode("utf-8", "replace")), config
        except (OSError, ValueError):
            rec["config_source"] = None
    return rec


def _version_key(name: str) -> tuple:
    """A release's sort key: numbers as numbers, and a -rc before its final release (7.4.0-rc3 < 7.4.0)."""
    parts = re.split(r"[.+~-]", name)
    return tuple((int(x), 1) if x.isdigit() else ((-1, 0) if x.startswith("rc") else (-1, 1)) for x in parts) + ((0, 2),)


def newest_in_boot(boot: str = paths.BOOT) -> str | None:
    """The newest /boot/vmlinuz-REL by release (what update-grub puts first), or None."""
    try:
        names = [n for n in os.listdir(boot) if n.startswith("vmlinuz-") and os.path.isfile(os.path.join(boot, n))]
    except OSError:
        return None
    return os.path.join(boot, max(names, key=lambda n: _version_key(n[len("vmlinuz-"):]))) if names else None


def scratch_spelling(target: dict) -> str | None:
    """kho_bootmem or kho_scratch, as the kernel of ``target`` (inspect()) parses it; None where unknown."""
    params = set(target.get("params") or ())
    if target.get("readable"):
        return "kho_bootmem" if "kho_bootmem" in params else ("kho_scratch" if "kho_scratch" in params else None)
    release = re.match(r"(\d+)\.(\d+)", target.get("release") or "")
    if release:
        return "kho_bootmem" if (int(release.group(1)), int(release.group(2))) >= (7, 4) else "kho_scratch"
    return None

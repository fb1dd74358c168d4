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

import os
import re
import struct
import time
import zlib

from ansible_collections.kexec.kho.plugins.module_utils._kho import paths

try:
    import lzma
except ImportError:  # a Python built without liblzma: xz images are then unknown, never an error
    lzma = None

# Bounds of one image's read on the host (the lab's 7.3.4 kernel: a 3.3 MB bzImage, 12 MB decompressed, one place
# for each family's name, 1.7 s in its emulated guest; a distribution's bzImage is 10 to 16 MB).
MAX_IMAGE = 64 << 20  # bytes read from an image file at most
MAX_KERNEL = 128 << 20  # bytes of decompressed kernel at most
MAX_CANDIDATES = 1024  # places where a name looked for starts (kho-v, \0kho_ ...), over the whole kernel
MAX_SECONDS = 30.0  # decompressing and scanning one payload, checked after each chunk
MAX_CONFIG = 1 << 20  # bytes of the embedded config (gzip; a kernel's is 30 to 60 KB)
XZ_MEMORY = 256 << 20  # what the xz decoder may allocate: the lab's payload asks for a 128 MiB dictionary (129 MiB)
CHUNK = 1 << 20  # decompressed bytes per step
ZSTD_SLICE = 256  # compressed bytes per step where the zstd decoder has no output bound (at most 8 MiB out)
KEEP = 64  # bytes of context a match needs after its start: more than the longest match and its lookahead
FAMILIES = ("kho", "memblock", "reserve-mem", "luo", "memfd")
# A compatible token: a family and its version, alone or in a composite (``kho-v4;radix-v1``).
TOKEN = re.compile(rb"(?<![A-Za-z0-9_.-])((?:kho|memblock|reserve-mem|luo|memfd)-v\d{1,3})(?=[\x00;])")
PARAMS = re.compile(rb"\x00(kho_scratch|kho_bootmem)=?\x00")
# Where each pattern may start: (a needle, the bytes its start has before the needle, the pattern).  A needle begins
# with a byte rare in a kernel, so that bytes.find skips fast (a \0 first is slow over zeros).
NEEDLES = tuple((name.encode("ascii") + b"-v", b"", TOKEN) for name in FAMILIES) + ((b"kho_", b"\x00", PARAMS),)
IKCONFIG = (b"IKCFG_ST", b"IKCFG_ED")
CONFIG_KEYS = ("CONFIG_KEXEC_HANDOVER", "CONFIG_LIVEUPDATE", "CONFIG_LIVEUPDATE_MEMFD")
TRUNCATED = "its payload ends before its compressed stream does (a truncated or damaged image)"


class Unread(Exception):
    """A payload not read to its end.  ``stands_in``: the host cannot decompress it, so the release's config may
    stand in; a payload read and found damaged, too large, too slow or unlike a kernel is unknown, nothing else."""

    def __init__(self, why: str, stands_in: bool = False):
        super().__init__(why)
        self.stands_in = stands_in


class Scan:
    """What a decompressed kernel carries (compatibles, parameters, its config), fed a chunk at a time.

    Each name looked for (NEEDLES) is found with bytes.find (memchr) and its pattern tried only there: the answer
    of the pattern tried at every byte, which TOKEN's lookbehind makes slow (3.4 s against 0.06 s for a 12 MB
    kernel in the lab's emulated guest).  Each position is examined once, with KEEP bytes after it or the end;
    ``base`` is the kernel offset of ``buf[0]``, ``done`` the offset examined up to.
    """

    def __init__(self):
        self.tokens, self.params, self.config = set(), set(), None
        self.size = self.candidates = self.base = self.done = 0
        self.buf = b""
        self._config_gz: bytearray | None = None
        self._config_from = -1  # offset where the embedded config starts; -1 before IKCFG_ST, None once settled

    def feed(self, chunk: bytes) -> None:
        self.size += len(chunk)
        if self.size > MAX_KERNEL:
            raise Unread(f"its payload decompresses to more than {MAX_KERNEL} bytes")
        self.buf += chunk
        self._examine(self.base + len(self.buf) - KEEP)

    def finish(self) -> None:
        self._examine(self.base + len(self.buf))

    def _examine(self, upto: int) -> None:
        if upto <= self.done:
            return
        lo, hi = self.done - self.base, upto - self.base
        for needle, before, pattern in NEEDLES:
            at = self.buf.find(needle, lo + len(before))
            while 0 <= at < hi + len(before):
                if self.buf.startswith(before, at - len(before)):
                    self._candidate(pattern, at - len(before))
                at = self.buf.find(needle, at + 1)
        self._collect_config(lo, hi)
        self.buf, self.base, self.done = self.buf[hi - 1:], upto - 1, upto  # one byte kept for the lookbehind

    def _candidate(self, pattern, at: int) -> None:
        self.candidates += 1
        if self.candidates > MAX_CANDIDATES:
            raise Unread(f"more than {MAX_CANDIDATES} places where a KHO compatible or parameter may start: "
                         "not read as a kernel")
        match = pattern.match(self.buf, at)  # the lookbehind still sees the byte before ``at``
        if match:
            (self.tokens if pattern is TOKEN else self.params).add(match.group(1).decode("ascii"))

    def _collect_config(self, lo: int, hi: int) -> None:
        """The bytes between the first IKCFG_ST and the next IKCFG_ED, then decoded (None where they are not)."""
        if self._config_from == -1:
            at = self.buf.find(IKCONFIG[0], lo)
            if not 0 <= at < hi:
                return
            self._config_gz, self._config_from = bytearray(), self.base + at + len(IKCONFIG[0])
        if self._config_from is None:
            return
        begin = max(self._config_from - self.base, lo)
        end = self.buf.find(IKCONFIG[1], begin)
        self._config_gz += self.buf[begin:end if 0 <= end < hi else hi]
        if 0 <= end < hi or len(self._config_gz) > MAX_CONFIG:
            self.config = config_text(bytes(self._config_gz)) if 0 <= end < hi else None
            self._config_gz, self._config_from = None, None


def config_text(gz: bytes) -> dict | None:
    """config_of the embedded config (gzip), read to its end; None where it does not decompress whole."""
    stream = zlib.decompressobj(16 + zlib.MAX_WBITS)
    try:
        text = stream.decompress(gz, 4 << 20)
    except zlib.error:
        return None
    return config_of(text.decode("utf-8", "replace")) if stream.eof else None


def compatible_tokens(value) -> list:
    """The tokens of a compatible, composite or not: 'kho-v4;radix-v1' -> ['kho-v4', 'radix-v1']."""
    return [t.strip() for t in str(value or "").split(";") if t.strip()]


def family(token: str) -> str:
    return token.rsplit("-v", 1)[0]


def _gzip_chunks(payload: bytes):
    stream = zlib.decompressobj(16 + zlib.MAX_WBITS)
    data = payload
    while not stream.eof:
        before = len(data)
        out = stream.decompress(data, CHUNK)
        data = stream.unconsumed_tail
        if out:
            yield out
        elif not stream.eof and len(data) in (0, before):  # nothing left to give it, or nothing taken
            raise Unread(TRUNCATED)


def _bounded_chunks(stream, payload: bytes):
    """lzma's and compression.zstd's decompressors: an output bound per call, the rest of the input kept inside."""
    data = payload
    while not stream.eof:
        if stream.needs_input and not data:
            raise Unread(TRUNCATED)
        out = stream.decompress(data, max_length=CHUNK)
        data = b""
        yield out


def _sliced_chunks(stream, payload: bytes):
    """zstandard's decompressobj, which has no output bound: its input given ZSTD_SLICE bytes at a time."""
    if not hasattr(stream, "eof"):
        raise Unread("zstd, whose end this host's zstandard module cannot tell", stands_in=True)
    for at in range(0, len(payload), ZSTD_SLICE):
        yield stream.decompress(payload[at:at + ZSTD_SLICE])
        if stream.eof:  # the first frame only: a bzImage follows it with its 4-byte size
            return
    raise Unread(TRUNCATED)


def _zstd_chunks(payload: bytes):
    """Python 3.14's compression.zstd, or zstandard; Unread (the config stands in) where the host has neither."""
    try:
        from compression import zstd  # pylint: disable=import-outside-toplevel
        return _bounded_chunks(zstd.ZstdDecompressor(), payload)
    except ImportError:
        pass
    try:
        import zstandard  # pylint: disable=import-outside-toplevel
    except ImportError:
        raise Unread("zstd, which this host's Python cannot read", stands_in=True) from None
    return _sliced_chunks(zstandard.ZstdDecompressor().decompressobj(), payload)


def _chunks(payload: bytes) -> tuple:
    """(compression name, its decompressed chunks); Unread where the host has no decompressor for it."""
    if payload.startswith(b"\x1f\x8b"):
        return "gzip", _gzip_chunks(payload)
    if payload.startswith(b"\xfd7zXZ\x00") or payload.startswith(b"\x5d\x00\x00"):
        if lzma is None:
            raise Unread("xz, which this host's Python cannot read (no lzma module)", stands_in=True)
        return "xz", _bounded_chunks(lzma.LZMADecompressor(memlimit=XZ_MEMORY), payload)
    if payload.startswith(b"\x28\xb5\x2f\xfd"):
        return "zstd", _zstd_chunks(payload)
    raise Unread(f"a payload compressed as {payload[:4].hex()} (not gzip, xz or zstd)", stands_in=True)


def read_kernel(payload: bytes, clock=time.monotonic) -> tuple:
    """(compression name, the Scan of the whole decompressed payload), read a chunk at a time within MAX_KERNEL,
    MAX_CANDIDATES and MAX_SECONDS, and to the end of its stream; Unread else."""
    how, chunks = _chunks(payload)
    deadline = clock() + MAX_SECONDS
    scan = Scan()
    try:
        for chunk in chunks:
            scan.feed(chunk)
            if clock() > deadline:
                raise Unread(f"reading its payload took more than {MAX_SECONDS:g} s")
    except Unread:
        raise
    except Exception as exc:  # pylint: disable=broad-except  # any decoder's own error type: unreadable, not a crash
        raise Unread(f"its payload does not decompress: {exc}") from exc
    scan.finish()
    return how, scan


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


def config_of(text: str) -> dict:
    found = dict(re.findall(r"^(CONFIG_\w+)=(\w+)$", text, re.M))
    return {k: found.get(k, "n") for k in CONFIG_KEYS}


def _read(path: str, limit: int = MAX_IMAGE) -> bytes:
    """The file, at most ``limit`` bytes; a buffer of its own size (read(n) allocates n bytes first)."""
    with open(path, "rb") as fh:
        size = os.fstat(fh.fileno()).st_size
        data = fh.read((min(size, limit) if size else limit) + 1)
    if len(data) > limit:
        raise ValueError(f"larger than {limit} bytes")
    if size and len(data) > size:
        raise ValueError("it grew while it was read")
    return data


def inspect(path: str, boot: str = paths.BOOT, clock=time.monotonic) -> dict:
    """The image's release, compression, the compatibles and parameters it knows, and its config.

    ``readable`` false (with ``why``) where the payload was not read to its end within the bounds: then where the
    host cannot decompress it, the header's release and a /boot/config-REL stand in; a payload that is damaged
    (truncated included), too large, too slow or unlike a kernel is unknown, and no config stands in for it.
    """
    rec = {"path": path, "release": None, "compression": None, "readable": False, "why": None,
           "compatibles": [], "params": [], "config": None, "config_source": None}
    stands_in = True
    try:
        rec["release"], payload = bzimage_parts(_read(path))
        how, scan = read_kernel(payload, clock)
    except (OSError, ValueError, Unread) as exc:
        rec["why"], stands_in = str(exc), getattr(exc, "stands_in", False)
    else:
        rec.update(readable=True, compression=how, compatibles=sorted(scan.tokens), params=sorted(scan.params),
                   config=scan.config, config_source="embedded" if scan.config is not None else None)
    if rec["config"] is None and rec["release"] and stands_in:
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

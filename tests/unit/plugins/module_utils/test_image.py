"""module_utils/_kho/image.py: what a target kernel reads, from its image: its release, formats and parameters,
read as a bounded stream"""

from __future__ import annotations

import gzip
import lzma
import struct
import sys
import time
import tracemalloc
import zlib

import kimage
from fakehost import running_fixture  # noqa: F401  pylint: disable=import-error,unused-import  # tests/: a fixture
from kimage import CONFIG, write  # pylint: disable=import-error  # tests/
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ansible_collections.kexec.kho.plugins.module_utils._kho import compat, image
from ansible_collections.kexec.kho.plugins.plugin_utils import _decode


@pytest.mark.parametrize("compression", ["xz", "gzip"])
def test_an_image_says_its_release_formats_and_parameters(tmp_path, compression):
    rec = image.inspect(write(tmp_path, compression=compression, config=CONFIG))
    assert rec["readable"] and rec["compression"] == compression and rec["release"] == "7.3.4"
    assert rec["compatibles"] == sorted(kimage.LAB_TOKENS) and rec["params"] == ["kho_scratch"]
    assert rec["config"] == {"CONFIG_KEXEC_HANDOVER": "y", "CONFIG_LIVEUPDATE": "y", "CONFIG_LIVEUPDATE_MEMFD": "n"}
    assert rec["config_source"] == "embedded"


def test_an_image_the_host_cannot_read_is_unknown_with_its_release_and_boot_config(tmp_path):
    (tmp_path / "config-7.4.0").write_text(CONFIG)
    rec = image.inspect(write(tmp_path, release="7.4.0", compression="lz4"), boot=str(tmp_path))
    assert not rec["readable"] and "not gzip, xz or zstd" in rec["why"] and rec["release"] == "7.4.0"
    assert rec["config"]["CONFIG_LIVEUPDATE_MEMFD"] == "n" and rec["config_source"].endswith("config-7.4.0")
    assert image.scratch_spelling(rec) == "kho_bootmem"  # from the release: 7.4 renamed it


@pytest.mark.parametrize("data, why", [(b"MZ" + b"\0" * 600, "no HdrS"), (b"\0" * 0x202 + b"HdrS", "too short")])
def test_what_is_not_a_bzimage_is_unknown_never_an_error(tmp_path, data, why):
    (tmp_path / "x").write_bytes(data)
    rec = image.inspect(str(tmp_path / "x"))
    assert not rec["readable"] and why in rec["why"]


def test_the_scratch_spelling_is_the_one_the_next_kernel_parses(tmp_path):
    assert image.scratch_spelling(image.inspect(write(tmp_path, params=("kho", "kho_bootmem")))) == "kho_bootmem"
    assert image.scratch_spelling(image.inspect(write(tmp_path))) == "kho_scratch"
    assert image.scratch_spelling({"readable": False, "release": "7.3.4"}) == "kho_scratch"
    assert image.scratch_spelling({"readable": False, "release": None}) is None


def test_the_newest_kernel_in_boot_is_the_next_one(tmp_path):
    for rel in ("7.3.4", "7.10.1", "7.4.0-rc3"):
        (tmp_path / f"vmlinuz-{rel}").write_bytes(b"x")
    assert image.newest_in_boot(str(tmp_path)).endswith("vmlinuz-7.10.1")
    assert image.newest_in_boot(str(tmp_path / "none")) is None


def test_composite_compatibles_are_lists_of_tokens():
    assert image.compatible_tokens("kho-v4;radix-v1") == ["kho-v4", "radix-v1"]
    assert _decode.root_version("radix-v1;kho-v4") == 4 and _decode.root_version("kho-v9") is None
    found = image.TOKEN.findall(b"\0kho-v4;radix-v1\0xx\0luo-v5;block-v1\0memfd-v2\0notkho-v3\0")
    assert found == [b"kho-v4", b"luo-v5", b"memfd-v2"]


SESSIONS = {"sessions": [{"name": "kexec_simple_state", "pid": 167}]}


def test_an_rc_comes_before_its_final_release(tmp_path):
    for rel in ("7.4.0-rc3", "7.4.0", "7.3.4"):
        (tmp_path / f"vmlinuz-{rel}").write_bytes(b"x")
    assert image.newest_in_boot(str(tmp_path)).endswith("vmlinuz-7.4.0")


CONFIG_GZ = gzip.compress(CONFIG.encode())
PIECES = [b"kho-v4", b"kho-v12", b"memblock-v1", b"reserve-mem-v1", b"luo-v5", b"memfd-v2", b"kho-v", b"-v3", b"x",
          b"_", b".", b"-", b"\x00", b";", b"1", b"memfd-v1234", b"xkho-v4", b"mem", b"kho", b"\x00kho_scratch",
          b"\x00kho_bootmem=", b"kho_", b"=", b"IKCFG_ST", b"IKCFG_ED", CONFIG_GZ, CONFIG_GZ[:20]]


def everywhere(pattern, kernel: bytes) -> set:
    """The pattern tried at every byte: what the scan must find."""
    return {m.group(1).decode() for m in (pattern.match(kernel, at) for at in range(len(kernel))) if m}


def embedded(kernel: bytes):
    start = kernel.find(image.IKCONFIG[0])
    end = kernel.find(image.IKCONFIG[1], start + 8) if start >= 0 else -1
    return image.config_text(kernel[start + 8:end]) if start >= 0 and end >= 0 else None


@given(st.lists(st.sampled_from(PIECES), max_size=40), st.lists(st.integers(1, 80), min_size=1, max_size=60))
@settings(max_examples=400, deadline=None)
def test_the_streamed_scan_finds_what_the_patterns_find_everywhere(pieces, sizes):
    """The scan tries a pattern only where its name starts, a chunk at a time: for any bytes cut anywhere, the answer
    is the pattern's tried at every byte of the whole, and the embedded config is the one between the markers."""
    kernel, scan, at = b"".join(pieces), image.Scan(), 0
    for size in sizes * (len(kernel) // sum(sizes) + 1):
        scan.feed(kernel[at:at + size])
        at += size
    scan.finish()
    assert scan.tokens == everywhere(image.TOKEN, kernel) and scan.params == everywhere(image.PARAMS, kernel)
    assert scan.config == embedded(kernel) and scan.size == len(kernel)


def wrapped(tmp_path, packed: bytes, name="target") -> str:
    """A 7.3.4 bzImage (kimage's header) around ``packed`` as its payload."""
    head = bytearray(kimage.bzimage())
    (offset,) = struct.unpack_from("<I", head, 0x248)
    start = (head[0x1F1] + 1) * 512 + offset
    struct.pack_into("<I", head, 0x24C, len(packed))
    (tmp_path / name).write_bytes(bytes(head[:start]) + packed)
    return str(tmp_path / name)


def gzip_bomb(mib: int) -> bytes:
    """A gzip stream of ``mib`` MiB of zeros that never ends, about 1 KB a MiB: a full flush after each MiB makes
    every MiB's deflate the same bytes, so one is made and repeated."""
    deflate = zlib.compressobj(9, zlib.DEFLATED, -15)
    one = deflate.compress(bytes(1 << 20)) + deflate.flush(zlib.Z_FULL_FLUSH)
    return b"\x1f\x8b\x08\x00\x00\x00\x00\x00\x00\xff" + one * mib


def timed(fn):
    tracemalloc.start()
    tracemalloc.reset_peak()
    started = time.process_time()
    try:
        return fn(), time.process_time() - started, tracemalloc.get_traced_memory()[1] >> 20
    finally:
        tracemalloc.stop()


def test_a_gzip_bomb_stops_at_the_cap_within_bounds(running, tmp_path):
    """Issue 37: a 1.04 MB gzip bomb cost the host 3.1 s and 1,039 MiB, and was read as a kernel."""
    bomb = gzip_bomb(1024)  # the issue's: 1 GiB of zeros in 1.06 MB
    assert len(bomb) < 1_100_000
    path = wrapped(tmp_path, bomb)
    rec, seconds, mib = timed(lambda: image.inspect(path))
    assert not rec["readable"] and rec["why"] == f"its payload decompresses to more than {image.MAX_KERNEL} bytes"
    assert seconds < 5 and mib < 16, (seconds, mib)  # 0.6 s, 3 MiB on the build machine
    assert compat.check(compat.handed_over(running, None, None), rec, False)["status"] == "unknown"


@pytest.mark.parametrize("compression", ["gzip", "xz"])
@pytest.mark.parametrize("keep", [0.5, 0.9, -1])
def test_a_truncated_payload_is_unknown_never_incompatible_nor_readable(running, tmp_path, compression, keep):
    """Issue 37: a cut stream was read as far as it went, readable, and its missing tail made it "incompatible"; the
    release's config (here without the memfd handler) does not stand in for an image that is damaged."""
    (tmp_path / "config-7.3.4").write_text(CONFIG)
    whole = image.bzimage_parts(kimage.bzimage(compression=compression, config=CONFIG))[1]
    cut = whole[:int(len(whole) * keep)] if keep > 0 else whole[:keep]
    rec = image.inspect(wrapped(tmp_path, cut), boot=str(tmp_path))
    assert not rec["readable"] and rec["release"] == "7.3.4" and rec["config"] is None, rec
    assert rec["why"] == image.TRUNCATED or rec["why"].startswith("its payload does not decompress"), rec["why"]
    support = compat.check(compat.handed_over(running, SESSIONS, None), rec, True)
    assert support["status"] == "unknown" and support["missing"] == [] and rec["why"] in support["msg"]


@pytest.mark.parametrize("compression", ["gzip", "xz"])
def test_a_whole_payload_followed_by_its_size_reads_whole(tmp_path, compression):
    """The kernel's build appends the payload's size after an xz or zstd stream: bytes after the end are not damage."""
    whole = image.bzimage_parts(kimage.bzimage(compression=compression))[1]
    rec = image.inspect(wrapped(tmp_path, whole + struct.pack("<I", 12345)))
    assert rec["readable"] and rec["compatibles"] == sorted(kimage.LAB_TOKENS), rec


def test_a_flood_of_kho_v_tokens_is_unknown_at_once(tmp_path):
    """Issue 37: 16 MiB of kho-v cost 1.3 s (about 42 s at the old MAX_KERNEL), each one tried as a token."""
    flood = gzip.compress(b"\x00kho-v" * ((16 << 20) // 6))
    path = wrapped(tmp_path, flood)
    rec, seconds, _mib = timed(lambda: image.inspect(path))
    assert not rec["readable"] and rec["why"].startswith(f"more than {image.MAX_CANDIDATES} places"), rec
    assert seconds < 1, seconds


def test_the_read_stops_at_its_deadline(tmp_path, monkeypatch):
    """A clock checked after each chunk: a slow host's read ends, unknown, once MAX_SECONDS have passed."""
    monkeypatch.setattr(image, "MAX_SECONDS", 3)
    ticks = []

    def clock():
        ticks.append(None)
        return float(len(ticks))
    rec = image.inspect(wrapped(tmp_path, gzip.compress(bytes(16 * image.CHUNK))), clock=clock)
    assert not rec["readable"] and rec["why"] == "reading its payload took more than 3 s"
    assert len(ticks) == 5  # the start, then a check after each chunk until the fourth passed the deadline


def test_an_lzma_payload_asking_for_a_huge_dictionary_is_refused_before_it_is_allocated(tmp_path):
    packed = bytearray(lzma.compress(kimage.kernel_payload(), format=lzma.FORMAT_ALONE))
    struct.pack_into("<I", packed, 1, 0x80000000)  # a 2 GiB dictionary, in a header with no checksum
    rec = image.inspect(wrapped(tmp_path, bytes(packed)))
    assert not rec["readable"] and "does not decompress" in rec["why"] and "emory" in rec["why"], rec["why"]


class FakeZstandard:
    """zstandard's decompressobj as the read uses it (no output bound, ``eof``), over zlib after the zstd magic."""

    class ZstdDecompressor:
        def decompressobj(self):
            return FakeZstandard.Stream()

    class Stream:
        def __init__(self):
            self.inner, self.magic = zlib.decompressobj(), 4

        def decompress(self, data):
            skip, self.magic = min(self.magic, len(data)), self.magic - min(self.magic, len(data))
            return self.inner.decompress(data[skip:])

        @property
        def eof(self):
            return self.inner.eof


@pytest.mark.parametrize("cut, readable", [(None, True), (-30, False)])
def test_zstd_through_zstandard_is_read_in_slices_to_its_end(tmp_path, monkeypatch, cut, readable):
    monkeypatch.setitem(sys.modules, "compression", None)  # no Python 3.14 compression.zstd
    monkeypatch.setitem(sys.modules, "zstandard", FakeZstandard)
    packed = (b"\x28\xb5\x2f\xfd" + zlib.compress(kimage.kernel_payload()))[:cut]
    rec = image.inspect(wrapped(tmp_path, packed))
    assert rec["readable"] is readable and rec["compression"] == ("zstd" if readable else None), rec
    assert rec["compatibles"] == (sorted(kimage.LAB_TOKENS) if readable else []) and rec["why"] in (None, image.TRUNCATED)


def test_zstd_without_a_module_is_unknown_and_the_config_stands_in(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "compression", None)
    monkeypatch.setitem(sys.modules, "zstandard", None)
    (tmp_path / "config-7.3.4").write_text(CONFIG)
    rec = image.inspect(wrapped(tmp_path, b"\x28\xb5\x2f\xfd" + bytes(64)), boot=str(tmp_path))
    assert not rec["readable"] and "cannot read" in rec["why"] and rec["config"]["CONFIG_LIVEUPDATE_MEMFD"] == "n"


def test_an_image_is_read_into_a_buffer_of_its_own_size(tmp_path):
    """read(MAX_IMAGE + 1) allocated the whole bound first, whatever the file's size."""
    path = write(tmp_path)
    _data, _seconds, mib = timed(lambda: image._read(path))
    assert mib < 4

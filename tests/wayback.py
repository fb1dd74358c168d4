"""The recorded trees of a way back (#36) that the units share: 7.3.4 before it hands over, and 7.3.4 again after
7.2.13 handed it back (tests/fixtures: cold, handover2)."""

from __future__ import annotations

import base64
from pathlib import Path

import pytest

from ansible_collections.kexec.kho.plugins.plugin_utils import _decode

OLD_BOOT = "4b1f3b0e-6c1d-4c47-9d4c-0d3c1c0e2a11"
MID_BOOT = "9d0c2e4a-1b3c-4d5e-8f70-112233445566"
BACK_BOOT = "c0ffee00-1b3c-4d5e-8f70-aabbccddeeff"
RUN = "0f3c9a7e5b2d4c1e8a6f9b0d2c4e6a8f"
WAY = {"possible": True, "kernel": "/boot/vmlinuz-7.3.4", "initrd": "/boot/initrd.img-7.3.4",
       "cmdline": "root=/dev/vda rw kho=on", "release": "7.3.4",
       "why": "the running kernel 7.3.4 is on disk: /boot/vmlinuz-7.3.4 with /boot/initrd.img-7.3.4"}
NO_WAY = {"possible": False, "kernel": None, "initrd": None, "cmdline": "root=/dev/vda", "release": "7.3.4",
          "why": "the running kernel 7.3.4 is not on disk (looked for /boot/vmlinuz-7.3.4)"}


def side(fixtures: Path, directory: str, name: str) -> dict:
    raw = {"present": True, "fdt": None, "sub_blobs": {}}
    for f in (fixtures / directory).glob(f"{name}_sub_fdts_*"):
        raw["sub_blobs"][f.name[len(name) + len("_sub_fdts_"):]] = base64.b64encode(f.read_bytes()).decode()
    facts, errors = _decode.decode_side(raw, name)
    assert errors == []
    return {**facts, "present": True}


def before(fixtures: Path) -> dict:
    """7.3.4, cold-booted, about to hand over oops and trace (count 1 in what it sends)."""
    return {"release": "7.3.4", "boot_id": OLD_BOOT, "interface": "live", "in": {"present": False},
            "out": side(fixtures, "cold", "out"), "log": []}


def home(fixtures: Path) -> dict:
    """7.3.4 again after 7.2.13 handed it back: the regions revived (the recorded log), kexec-metadata from 7.2.13."""
    incoming = side(fixtures, "handover2", "in")
    incoming["kexec_metadata"] = {"version": 1, "previous_release": "7.2.13", "kexec_count": 2}
    return {"release": "7.3.4", "boot_id": BACK_BOOT, "interface": "live", "in": incoming,
            "out": side(fixtures, "handover2", "out"),
            "log": (fixtures / "handover2" / "dmesg_kho.txt").read_text().splitlines(),
            "reserve_mem_param": ["oops", "trace"]}


@pytest.fixture(name="before")
def before_fixture(fixtures) -> dict:
    return before(fixtures)


@pytest.fixture(name="home")
def home_fixture(fixtures) -> dict:
    return home(fixtures)

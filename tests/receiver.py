"""What the units of the receiver's word share: the recorded sides of a handover that carried the regions oops and
trace (tests/fixtures: cold, handover1), and kho_facts' liveupdate facts as the tests build them."""

from __future__ import annotations

import pytest
from wayback import side  # pylint: disable=import-error  # tests/: a recorded side decoded as kho_facts does

OOPS_START = 0x3EB00000


def log(fixtures, directory: str) -> list:
    return (fixtures / directory / "dmesg_kho.txt").read_text().splitlines()


@pytest.fixture(name="sent")
def sent_fixture(fixtures) -> dict:
    """The cold-booted kernel about to hand over oops and trace (its own out/ memblock, and ramoops on oops)."""
    return {"out": side(fixtures, "cold", "out"), "interface": "live",
            "log": [f"[    1.2] ramoops: using 0x100000@{OOPS_START:#x}, ecc: 0"]}


@pytest.fixture(name="kept")
def kept_fixture(fixtures) -> dict:
    """The kernel booted by that handover with the same reserve_mem= (recorded: it revived both)."""
    return {"interface": "live", "in": side(fixtures, "handover1", "in"), "out": side(fixtures, "handover1", "out"),
            "log": log(fixtures, "handover1") + [f"[    1.3] ramoops: using 0x100000@{OOPS_START:#x}, ecc: 0"],
            "reserve_mem_param": ["oops", "trace"]}


SESSION = {"name": "test-session", "pid": 167, "comm": "luo_kexec_simpl", "unit": "ssh.service"}


STORE = {"unit": "cache.service", "active": "active", "preserve": "yes", "luo_session": None, "fd_store": 1}


def facts(sessions=(), units=(), device=True, number=None, count=None, incoming=None, registered="as device"):
    """kho_facts' liveupdate facts; the device registered by the kernel wherever it is there, unless told."""
    return {"device": device, "registered": device if registered == "as device" else registered,
            "sessions": list(sessions), "incoming_number": incoming,
            "outgoing": {"compatible": "luo-v5", "next_number": number, "sessions": False, "flbs": True},
            "systemd": {"version": 262, "kexec_count": count, "preserving_units": list(units)}}

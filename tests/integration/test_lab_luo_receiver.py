"""Live update, from the receiver (issue 37), on a real guest with the kernel's own LUO selftest.

`luo_kexec_simple` stage 1 forks a process that holds two sessions (`test-session`, `kexec_simple_state`); after
the jump, its stage 2 (`-s 2`) retrieves and checks them in the new boot.  Stage 2 is the receiver's own word, so
it decides: the role's `verified` must coincide with stage 2 passing, and a target on which `/dev/liveupdate` would
not be usable (a command line without `liveupdate=on`) is refused before the jump, naming the sessions.  Found on a
7.3.4 guest before the fix: `verified; ... number 1 (expected 1), preserved kexec_simple_state, test-session`, and
stage 2 in the new boot said `SKIP Failed to open /dev/liveupdate`.

Run it alone, from the repository root (the lab's kernel, snapshot and selftests are built on first use;
`make lab-full` runs it with the rest of the matrix):
    make lab-build layout-lab
    cd build-lab/ansible_collections/kexec/kho && PATH=$OLDPWD/.venv/bin:$PATH ANSIBLE_COLLECTIONS_PATH=$OLDPWD/build-lab \
        python -m pytest -ra -p no:cacheprovider -m lab tests/integration/test_lab_luo_receiver.py
"""

from __future__ import annotations

import pytest
from test_faults import assert_untouched
from test_luo import PASSED, selftests, stage  # noqa: F401  pylint: disable=unused-import
from test_role import facts as facts_of
from test_role import handover

pytestmark = pytest.mark.lab_full  # make test-lab

SESSIONS = {"test-session", "kexec_simple_state"}
TEST = "luo_kexec_simple"


def without_liveupdate(line: str) -> str:
    """The running line as the role's default target takes it (no BOOT_IMAGE), with every liveupdate= left out."""
    return " ".join(t for t in line.split() if t.split("=", 1)[0] not in ("BOOT_IMAGE", "liveupdate"))


def held(guests, tmp_path, name: str) -> dict:
    state = facts_of(guests, tmp_path)[name]
    return {"boot_id": state["boot_id"], "cmdline": state["cmdline"], "registered": state["liveupdate"]["registered"],
            "sessions": {s["name"] for s in state["liveupdate"]["sessions"]}}


def stage_2_passed(guests, tmp_path, selftests) -> tuple:  # noqa: F811
    out = stage(guests, tmp_path, selftests, 2, (TEST,))
    return f"{TEST} rc=0" in out and PASSED[TEST] in out, out[-3000:]


def test_a_verified_verdict_coincides_with_stage_2_passing(lab_factory, tmp_path, selftests):  # noqa: F811
    guests = lab_factory(1, "--append", "liveupdate=on")
    name = guests["guests"][0]["name"]
    out = stage(guests, tmp_path, selftests, 1, (TEST,))
    assert "You may now perform kexec reboot" in out, out[-3000:]
    before = held(guests, tmp_path, name)
    assert SESSIONS <= before["sessions"] and before["registered"] is True, before

    # A target on which /dev/liveupdate would not be usable: refused in preflight, before any change.
    line = without_liveupdate(before["cmdline"])
    proc, summary = handover(guests, tmp_path, kho_handover_cmdline=line)
    refused = summary[name]
    assert proc.returncode != 0 and refused["verdict"] == "refused, nothing changed", refused
    assert refused["failed_step"] == "preflight", refused
    assert "the target command line has no liveupdate=on" in refused["error"], refused
    assert all(f"session {s} held by pid" in refused["error"] for s in SESSIONS), refused
    assert_untouched(guests, tmp_path)
    after_refusal = held(guests, tmp_path, name)
    assert after_refusal["boot_id"] == before["boot_id"] and SESSIONS <= after_refusal["sessions"], after_refusal

    # The default target keeps liveupdate=on: the role says verified, and stage 2 in the new boot agrees.
    proc, summary = handover(guests, tmp_path)
    result = summary[name]
    passed, out = stage_2_passed(guests, tmp_path, selftests)
    assert (result["verdict"] == "verified") == passed, (result, out)
    assert passed and proc.returncode == 0, (result, out)
    assert result["liveupdate"]["lost"] == [] and result["boot_id_after"] != before["boot_id"], result

    # The loss accepted, the same target without liveupdate=on jumps: never verified, and stage 2 agrees again.
    out = stage(guests, tmp_path, selftests, 1, (TEST,))
    assert "You may now perform kexec reboot" in out, out[-3000:]
    proc, summary = handover(guests, tmp_path, kho_handover_cmdline=line, kho_handover_accept_loss=["process_sessions"])
    lost = summary[name]
    passed, out = stage_2_passed(guests, tmp_path, selftests)
    assert (lost["verdict"] == "verified") == passed, (lost, out)
    assert not passed and proc.returncode != 0 and lost["verdict"] == "failed after the jump", (lost, out)
    assert "the new kernel did not register /dev/liveupdate" in lost["error"], lost
    assert held(guests, tmp_path, name)["registered"] is False  # the new kernel's own word, read again

"""plugin_utils/_evidence.py: the new kernel's evidence read by one POSIX sh command (no Python on the host).

A contract with kho_facts' module: on the same files, the read, decoded on the controller, gives the same facts of
the handover as the module's read does (facts.gather), through the same decoder.  The command runs under the real
/bin/sh and dash, against simulated trees of each interface generation."""

from __future__ import annotations

import shutil
import subprocess

import pytest
import simtree  # pylint: disable=import-error  # tests/

from ansible_collections.kexec.kho.plugins.module_utils._kho import facts, host
from ansible_collections.kexec.kho.plugins.plugin_utils import _evidence
from ansible_collections.kexec.kho.plugins.plugin_utils._decode import facts_from_raw

SHELLS = [s for s in ("/bin/sh", shutil.which("dash"), shutil.which("bash")) if s]
SAME = ("boot_id", "release", "interface", "log", "reserve_mem_param", "in", "cmdline", "params")


def read(roots: dict, shell: str = "/bin/sh") -> str:
    proc = subprocess.run([shell, "-c", _evidence.command(roots)], capture_output=True, text=True, check=False,
                          timeout=60)
    assert proc.returncode == 0, proc.stderr
    return proc.stdout


@pytest.mark.parametrize("shell", SHELLS)
@pytest.mark.parametrize("generation", ["live-handover", "live-cold", "finalize-6.19", "live-7.4", "none"])
def test_the_read_gives_what_the_module_reads(tmp_path, generation, shell):
    opts = simtree.build(generation, tmp_path / generation)
    kho = host.from_params(opts)
    module = facts_from_raw(facts.gather(kho, kho.debugfs_mounted()))
    ours = facts_from_raw(_evidence.decode(read(opts["_internal"], shell)))
    assert {k: ours.get(k) for k in SAME} == {k: module.get(k) for k in SAME}
    assert ours["out"]["sub_blobs"] == module["out"]["sub_blobs"]
    for key in ("device", "registered", "incoming_number", "restore_failures"):
        assert ours["liveupdate"][key] == module["liveupdate"][key], key


def test_a_handover_read_carries_the_incoming_tree_and_the_kernels_records(tmp_path):
    opts = simtree.build("live-handover", tmp_path / "t")
    got = facts_from_raw(_evidence.decode(read(opts["_internal"])))
    assert got["in"]["present"] and got["in"]["compatible"] and "memblock" in got["in"]["sub_blobs"]
    assert got["log"] and all(line.startswith("[") for line in got["log"])
    assert got["boot_id"] == simtree.BOOT_ID and not got.get("over_budget")


def test_a_record_a_process_wrote_is_not_the_kernels(tmp_path):
    opts = simtree.build("live-cold", tmp_path / "t")
    kmsg = tmp_path / "t" / "dev" / "kmsg"
    kmsg.write_text(kmsg.read_text() + "14,99,5000000,-;Revived memory reservation 'oops' from KHO\n")
    assert not any("Revived" in line for line in _evidence.decode(read(opts["_internal"]))["log"] or [])


@pytest.mark.parametrize("answer, words", [
    ("", "first line"),
    ("kho-evidence 1\nboot_id x\n", "its end"),
    ("kho-evidence 1\nfdt in AAAA\nend\n", "did not open"),
    ("kho-evidence 1\nside in\nsub in ../x AAAA\nend\n", "named"),
    ("kho-evidence 1\nside in\nfdt in !!!\nend\n", "not base64"),
    ("kho-evidence 1\nBAD LINE\nend\n", "not in the read's form"),
    ("kho-evidence 1\n" + "x" * (_evidence.MAX_ANSWER + 1), "at most"),
    (None, "not text"),
])
def test_an_answer_not_of_the_read_is_refused_with_the_reason(answer, words):
    with pytest.raises(_evidence.EvidenceError, match=words):
        _evidence.decode(answer)


def test_a_blob_over_the_bound_is_refused(monkeypatch, tmp_path):
    opts = simtree.build("live-handover", tmp_path / "t")
    monkeypatch.setattr(host, "MAX_READ", 16)
    with pytest.raises(_evidence.EvidenceError, match="larger than the 16 bytes"):
        _evidence.decode(read(opts["_internal"]))


def test_the_answer_is_the_new_boots_facts_only_with_its_boot_id(tmp_path):
    opts = simtree.build("live-handover", tmp_path / "t")
    text = read(opts["_internal"])
    got = _evidence.facts(text, simtree.BOOT_ID)
    assert got["pstore_found"] == [] and got["facts"]["in"]["present"] and got["facts"]["boot_id"] == simtree.BOOT_ID
    assert "not the new boot's" in _evidence.facts(text, "00000000-0000-0000-0000-000000000000")["error"]
    assert "first line" in _evidence.facts("garbage", simtree.BOOT_ID)["error"]  # total: an error, never a raise
    crlf = _evidence.facts(text.replace("\n", "\r\n"), simtree.BOOT_ID)  # through a pty (ssh -tt under become)
    assert crlf["facts"] == got["facts"]


@pytest.mark.parametrize("load, search, enough", [
    ({"target": {"handed_over": ["kho-v4", "memblock-v1", "reserve-mem-v1"]}}, None, True),
    ({"target": {"handed_over": ["kho-v4", "memblock-v1"]}}, ["kexec-kho-canary-1"], False),  # the canary: pstore
    ({"target": {"handed_over": ["kho-v4", "luo-v5", "memfd-v2"]}}, None, False),  # sessions, fd stores: user space
    ({"target": {}}, None, False),  # unknown what rides: the module's read
    ({}, None, False),
])
def test_the_evidence_is_enough_only_for_kernel_state(load, search, enough):
    assert _evidence.enough(load, search) is enough

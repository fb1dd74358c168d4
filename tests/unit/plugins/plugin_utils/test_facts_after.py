"""The new boot's facts in one command (kho_kexec's facts_after): the real command, run by real interpreters, against
simulated trees.

The command is what the controller sends; sh and each host Python run it here as a host would.  What it prints
must decode to what kho_facts' own read gives for the same tree (the same code, without AnsibleModule).
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import simtree

from ansible_collections.kexec.kho.plugins.module_utils._kho import bare, facts, host
from ansible_collections.kexec.kho.plugins.plugin_utils import _facts_after
from ansible_collections.kexec.kho.plugins.plugin_utils._decode import facts_from_raw

PYENV = Path.home() / ".pyenv" / "versions"
NEW = "aaaaaaaa-bbbb-cccc-dddd-eeeeeeeeeeee"  # the boot the jump's polls saw come up
HOST_PYTHONS = ("3.8", "3.9", "3.10", "3.11", "3.12", "3.13")  # the managed hosts' Pythons the README names


def tree(tmp_path, generation="live-handover", canary="kexec-kho-canary-1"):
    opts = simtree.build(generation, tmp_path / generation)
    pstore = Path(opts["_internal"]["sysfs_root"]) / "fs" / "pstore"
    pstore.mkdir(parents=True)
    (pstore / "pmsg-ramoops-0").write_text(f"{canary}\n")
    return opts


def read(opts: dict, python: str, needles=("kexec-kho-canary-1", "absent")) -> str:
    command = _facts_after.read_command(python, {**opts, "pstore_search": list(needles)})
    assert command is not None
    return subprocess.run(["sh", "-c", command], capture_output=True, text=True, check=True, timeout=120).stdout


def test_the_read_gives_what_kho_facts_reads(tmp_path, fixtures):
    opts = tree(tmp_path)
    got = _facts_after.decode(read(opts, sys.executable), simtree.BOOT_ID)
    kho = host.from_params(opts)
    expected = facts.read(kho, True, ["kexec-kho-canary-1", "absent"], bare.run_command)
    assert got["facts"] == facts_from_raw(expected["kho_raw"])
    assert got["pstore_found"] == expected["pstore_found"] == ["kexec-kho-canary-1"]
    assert got["facts"]["in"]["present"] and got["facts"]["in"]["kexec_metadata"]["kexec_count"] == 1
    assert "[    0.700904] test_kho: KHO restore succeeded" in got["facts"]["log"]


@pytest.mark.parametrize("version", HOST_PYTHONS)
def test_each_host_python_runs_the_read(tmp_path, fixtures, version):
    found = sorted(PYENV.glob(f"{version}.*/bin/python{version}"))
    if not found:
        pytest.skip(f"no Python {version} under {PYENV} on this machine")
    got = _facts_after.decode(read(tree(tmp_path), str(found[-1])), simtree.BOOT_ID)
    assert "error" not in got, got
    assert got["facts"]["interface"] == "live" and got["facts"]["in"]["compatible"] == "kho-v4"


def test_a_host_that_cannot_be_read_says_why(tmp_path, fixtures):
    opts = {"_internal": {**tree(tmp_path)["_internal"], "procfs_root": str(tmp_path / "no-proc")}}
    got = _facts_after.decode(read(opts, sys.executable), simtree.BOOT_ID)
    assert "error" in got  # a missing file reads as absent, never a traceback; facts without the boot id are no one's


@pytest.mark.parametrize("python", ["python3", "/usr/bin/python3; reboot", "/usr/bin/python 3", "", None, 3])
def test_only_a_plain_absolute_interpreter_path_is_run(python):
    assert _facts_after.read_command(python, simtree.options(Path("/x"))) is None


def test_the_command_fits_in_one_argument():
    """sudo's sh -c carries the whole command as one argument: the kernel takes at most 128 KiB there."""
    command = _facts_after.read_command("/usr/bin/python3", {**simtree.options(Path("/x")), "pstore_search": ["c"]})
    assert command and len(command) < 128 << 10


@pytest.mark.parametrize("text", ["", "not json", "[]", '{"kho_raw": 1}', '{"error": 5}'])
def test_answers_that_are_not_facts_are_an_error(text):
    assert set(_facts_after.decode(text, NEW)) == {"error"}


@pytest.mark.parametrize("text, why", [
    ("[" * 100_000, "nested deeper than 32 levels"),  # issue 37: a RecursionError escaped, after the jump
    ('{"kho_raw": {"log": ' + "[" * 40 + "]" * 40 + "}}", "nested deeper than 32 levels"),  # would flow on as facts
    ("x" * (bare.MAX_ANSWER + 8), "more than the"),
    (None, "not text"),
    (b"{}", "not text"),
])
def test_a_hostile_answer_is_a_failed_read_with_the_reason_never_an_exception(text, why):
    got = _facts_after.decode(text, NEW)
    assert set(got) == {"error"} and why in got["error"], got


def test_a_decoder_failure_is_a_failed_read_with_the_reason(monkeypatch):
    def broken(_raw):
        raise KeyError("boom")
    monkeypatch.setattr(_facts_after, "facts_from_raw", broken)
    assert _facts_after.decode(facts_text(NEW), NEW) == {"error": "the new boot's facts could not be decoded: KeyError: 'boom'"}


def test_the_length_is_checked_before_parsing(monkeypatch):
    parsed = []
    monkeypatch.setattr(_facts_after.json, "loads", lambda text: parsed.append(text) or {})
    assert "more than the" in _facts_after.decode(" " * (bare.MAX_ANSWER + 8), NEW)["error"] and parsed == []


def facts_text(boot_id, **raw) -> str:
    return json.dumps({"kho_raw": {"boot_id": boot_id, "in": {"present": True}, **raw}, "pstore_found": ["c"]})


def test_the_facts_of_the_new_boot_are_its_facts():
    got = _facts_after.decode(facts_text(NEW), NEW)
    assert "error" not in got and got["facts"]["boot_id"] == NEW and got["pstore_found"] == ["c"], got


@pytest.mark.parametrize("read_id, shown", [
    ("11111111-2222-3333-4444-555555555555", "'11111111-2222-3333-4444-555555555555'"),  # the old boot's, say
    (None, "none"),  # the new boot's id unread: no one's facts
    ("x" * 5000, "'" + "x" * 64 + "'"),  # a hostile id, shown cut
    (["a"], "a list"),
])
def test_facts_of_another_boot_are_a_failed_read_never_the_new_boots(read_id, shown):
    """Issue 37: the facts_after answer's boot_id was never compared with the new boot's."""
    got = _facts_after.decode(facts_text(read_id), NEW)
    assert got == {"error": f"the facts read carry boot id {shown}, not the new boot's {NEW} that the polls saw come up"}


@pytest.mark.parametrize("new_boot_id", [None, ""])
def test_without_the_new_boots_id_no_facts_are_its_own(new_boot_id):
    assert "the new boot's id is not known" in _facts_after.decode(facts_text(NEW), new_boot_id)["error"]


def test_the_real_read_of_one_boot_is_refused_as_anothers(tmp_path, fixtures):
    got = _facts_after.decode(read(tree(tmp_path), sys.executable), NEW)
    assert got == {"error": f"the facts read carry boot id {simtree.BOOT_ID!r}, not the new boot's {NEW} that the "
                            "polls saw come up"}


def test_the_hosts_own_reason_is_kept_short():
    got = _facts_after.decode(json.dumps({"error": "e" * 10_000}), NEW)
    assert got == {"error": "e" * _facts_after.MAX_WHY}

# Copyright (c) kexec.kho contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
"""The jump status contract between the host and the controller (#37 item 1): what state=executed's run writes
(module_utils/_kho/jump_status.py) is what every poll reads back (plugin_utils/_jump.py), with whether the run's
process is still alive, run in a real shell."""

from __future__ import annotations

import os
import shutil
import subprocess
import time

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ansible_collections.kexec.kho.plugins.module_utils._kho import jump_status, paths
from ansible_collections.kexec.kho.plugins.plugin_utils import _jump

SHELLS = [sh for sh in ("/bin/sh", shutil.which("dash"), shutil.which("bash")) if sh]


def poll(shell: str, status_path, monkeypatch) -> _jump.Arrival:
    monkeypatch.setattr(paths, "JUMP_STATUS", str(status_path))
    out = subprocess.run([shell, "-c", _jump.arrival_command(None)], capture_output=True, text=True, check=True,
                         timeout=20).stdout
    return _jump.parse_arrival(out)


@pytest.mark.parametrize("shell", SHELLS)
def test_a_poll_reads_the_runs_status_and_sees_its_process_alive(tmp_path, monkeypatch, shell):
    writer = jump_status.Writer(str(tmp_path / "jump"), "run-1")  # this test's process is the run
    written = writer.write(paths.JUMP_RUNNING, (paths.DONE_LOAD,))
    arrival = poll(shell, tmp_path / "jump", monkeypatch)
    assert arrival.status == written and arrival.status.pid == os.getpid() and arrival.process == paths.RUN_ALIVE
    assert arrival.boot_id == _jump.controller_boot_id() and arrival.check == "unchecked"


@pytest.mark.parametrize("shell", SHELLS)
def test_a_poll_sees_a_gone_process_and_a_reused_pid_as_gone(tmp_path, monkeypatch, shell):
    gone = subprocess.Popen(["true"])
    gone.wait()
    status = tmp_path / "jump"
    status.write_text(jump_status.Status("run-1", gone.pid, "12345").line())
    assert poll(shell, status, monkeypatch).process == paths.RUN_GONE
    # This process's pid with another start time: a pid reused by a new process is not the run.
    start = jump_status.process_start(os.getpid())
    status.write_text(jump_status.Status("run-1", os.getpid(), str(int(start) + 1)).line())
    assert poll(shell, status, monkeypatch).process == paths.RUN_GONE


@pytest.mark.parametrize("shell", SHELLS)
@pytest.mark.parametrize("text", ["", "started\n", "run-1 notapid 5 - running\n", "run-1 1 2\n",
                                  "$(touch pwned) 1 2 - running\n", "* * * * *\n"])
def test_a_status_not_of_the_runs_form_names_no_process(tmp_path, monkeypatch, shell, text):
    status = tmp_path / "jump"
    status.write_text(text)
    monkeypatch.chdir(tmp_path)
    arrival = poll(shell, status, monkeypatch)
    assert arrival.status is None and arrival.process in (paths.RUN_UNKNOWN, paths.RUN_GONE)
    assert not (tmp_path / "pwned").exists()


def test_the_process_check_survives_a_command_name_with_parentheses_and_spaces(tmp_path, monkeypatch):
    """Field 22 is counted after the command name, which may hold ') ' itself (the controller's and the poll's)."""
    odd = tmp_path / "a) b (c"
    shutil.copy(shutil.which("sleep"), odd)
    proc = subprocess.Popen([str(odd), "30"])
    try:
        deadline = time.monotonic() + 10
        while ") b (c" not in open(f"/proc/{proc.pid}/stat").read() and time.monotonic() < deadline:
            time.sleep(0.02)  # until the exec has happened
        start = jump_status.process_start(proc.pid)
        fields = open(f"/proc/{proc.pid}/stat").read().rsplit(") ", 1)[1].split()
        assert start == fields[19]
        status = tmp_path / "jump"
        status.write_text(jump_status.Status("run-1", proc.pid, start).line())
        for shell in SHELLS:
            assert poll(shell, status, monkeypatch).process == paths.RUN_ALIVE, shell
    finally:
        proc.kill()
        proc.wait()


def test_a_poll_reads_a_bounded_status(tmp_path, monkeypatch):
    status = tmp_path / "jump"
    status.write_text("run-1 " + "9" * 1_000_000 + "\n")
    monkeypatch.setattr(paths, "JUMP_STATUS", str(status))
    out = subprocess.run(["/bin/sh", "-c", _jump.arrival_command(None)], capture_output=True, text=True,
                         check=True).stdout
    assert len(out) < jump_status.MAX_LINE + 200 and _jump.parse_arrival(out).status is None


def test_the_run_id_and_the_start_time_are_checked_before_anything_is_written(tmp_path):
    for bad in (None, "", "a b", "x" * 65, "$(reboot)", 5):
        with pytest.raises(jump_status.StatusError, match="run_id is"):
            jump_status.Writer(str(tmp_path / "jump"), bad)
    with pytest.raises(jump_status.StatusError, match="cannot read the start time"):
        jump_status.Writer(str(tmp_path / "jump"), "run-1", pid=2 ** 22 + 7)
    assert not (tmp_path / "jump").exists()
    (tmp_path / "ro").mkdir()
    (tmp_path / "ro" / "jump").mkdir()  # a directory where the file goes: the write fails, and says so
    with pytest.raises(jump_status.StatusError, match="cannot write the jump status"):
        jump_status.Writer(str(tmp_path / "ro" / "jump"), "run-1").write(paths.JUMP_RUNNING, ())


WORDS = st.sampled_from(["run-1", "4242", "777", "-", "load", "finalize,load", "running", "started", "exit", "7",
                         "failed", "not-loaded", "none", ""])


@settings(max_examples=300, deadline=None)
@given(st.one_of(st.text(max_size=300), st.lists(WORDS, max_size=7).map(" ".join)))
def test_parse_is_total_and_what_it_returns_reads_back_the_same(text):
    status = jump_status.parse(text)
    assert status is None or jump_status.parse(status.line()) == status


@pytest.mark.parametrize("shell", SHELLS)
def test_what_a_poll_also_reads_is_read_on_another_boot_only(tmp_path, monkeypatch, shell):
    """arrival_command's ``after`` (the new kernel's evidence): behind the boot id test, so no poll of the old boot
    pays for it; parse_arrival gives it apart, the five lines as before."""
    monkeypatch.setattr(paths, "JUMP_STATUS", str(tmp_path / "none"))
    here, other = _jump.controller_boot_id(), "00000000-0000-4000-8000-000000000000"

    def answer(old_id):
        return _jump.parse_arrival(subprocess.run([shell, "-c", _jump.arrival_command(None, "echo one; echo two", old_id)],
                                                  capture_output=True, text=True, check=True, timeout=20).stdout)
    assert answer(here).after is None and answer(here).boot_id == here  # still the old boot: not read
    got = answer(other)  # a boot other than the old one: read, behind the mark
    assert got.after == "one\ntwo\n" and got.boot_id == here and got.check == "unchecked"
    assert "echo one" not in _jump.arrival_command(None, "echo one", "not a boot id")  # no old boot id: no fold

"""Waiting for the new boot, the jump command, and the report rendering."""

from __future__ import annotations

import os
import re
import shutil
import stat
import subprocess
import time
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ansible_collections.kexec.kho.plugins.module_utils._kho import jump_status
from ansible_collections.kexec.kho.plugins.module_utils._kho import kexec as K
from ansible_collections.kexec.kho.plugins.module_utils._kho.kexec import check_values
from ansible_collections.kexec.kho.plugins.plugin_utils import _jump, _report
from ansible_collections.kexec.kho.plugins.module_utils._kho import paths

OLD = "11111111-2222-3333-4444-555555555555"
NEW = "aaaaaaaa-bbbb-cccc-dddd-eeeeeeeeeeee"


class Clock:
    def __init__(self):
        self.now = 0.0

    def __call__(self):
        return self.now

    def sleep(self, seconds):
        self.now += seconds


def test_boot_id_must_be_well_formed():
    assert _jump.boot_id(NEW + "\n") == NEW
    for junk in ("", None, "Permission denied", "ssh: connect to host: Connection refused", NEW[:-1], NEW.upper()):
        assert _jump.boot_id(junk) is None


def test_an_error_text_is_never_taken_for_a_new_boot():
    clock = Clock()
    replies = iter(["cat: /proc/sys/kernel/random/boot_id: No such file", OLD, NEW])
    back = _jump.wait_for_new_boot(lambda: next(replies), OLD, 60, 0.25, clock=clock, sleep=clock.sleep)
    assert back["boot_id"] == NEW and back["attempts"] == 3


def test_connection_errors_count_as_not_yet():
    clock = Clock()
    calls = {"n": 0}

    def read():
        calls["n"] += 1
        if calls["n"] < 4:
            raise ConnectionError("refused")
        return NEW
    assert _jump.wait_for_new_boot(read, OLD, 60, 0.5, clock=clock, sleep=clock.sleep)["attempts"] == 4


def test_each_state_of_the_jump_is_told_as_it_is_seen():
    clock = Clock()
    events = []
    back = _jump.wait_for_new_boot(lambda: NEW, OLD, 60, 0.25, probe=lambda: clock.now < 1 or clock.now >= 12.3,
                                   clock=clock, sleep=clock.sleep, on_event=lambda s, t: events.append((s, t)))
    assert [s for s, _t in events] == [_jump.EVENT_GONE, _jump.EVENT_BANNER, _jump.EVENT_BACK]
    assert events[0][1] == pytest.approx(1.0, abs=0.3) and events[1][1] >= 12.3 and back["boot_id"] == NEW


def test_probe_waits_for_the_old_kernel_to_go_then_detects_fast():
    clock = Clock()

    def probe():  # old kernel answers until t=1, gone until t=12.3, back after
        return clock.now < 1 or clock.now >= 12.3
    reads = []

    def read():
        reads.append(clock.now)
        return NEW
    probes = []
    back = _jump.wait_for_new_boot(read, OLD, 60, 0.25, probe=lambda: probes.append(clock.now) or probe(),
                                   clock=clock, sleep=clock.sleep)
    assert len(reads) == 1 and 12.3 <= reads[0] <= 12.3 + _jump.MAX_PAUSE  # no session to the dying kernel
    assert back["first_answer"] == reads[0]
    gaps = [b - a for a, b in zip(probes, probes[1:]) if a >= 1]  # while it was gone: fewer and fewer probes
    assert min(g for g in gaps if g) == pytest.approx(0.25) and max(gaps) == pytest.approx(_jump.MAX_PAUSE)
    assert len(gaps) < 14  # 45 at a steady 0.25 s: each may reach sshd late, all at once, as it starts


def test_timeout_says_how_long_and_why():
    clock = Clock()

    def refused():
        raise OSError("refused")
    with pytest.raises(_jump.NotBack, match=r"within 10 s \(\d+ attempts; last error: refused\)"):
        _jump.wait_for_new_boot(refused, OLD, 10, 1, clock=clock, sleep=clock.sleep)


def test_timeout_while_down_with_a_probe():
    clock = Clock()
    with pytest.raises(_jump.NotBack, match="0 attempts"):
        _jump.wait_for_new_boot(lambda: NEW, OLD, 5, 0.5, probe=lambda: False, clock=clock, sleep=clock.sleep)


def test_a_host_still_on_its_old_boot_did_not_jump():
    """The trigger was accepted but nothing jumped (a timer queued, then kexec -e failed): said, with the count."""
    clock = Clock()
    with pytest.raises(_jump.NotJumped, match=r"the jump did not happen: .* old boot 1111.* 60 s after") as info:
        _jump.wait_for_new_boot(lambda: OLD, OLD, 300, 0.5, probe=lambda: True, not_jumped_after=60, clock=clock,
                                sleep=clock.sleep)
    assert clock.now < 61 and info.value.old_answers > 0 and info.value.seen_down is False


def test_a_host_seen_gone_is_never_called_not_jumped():
    """Old answers, a real outage, then nothing: unknown, not 'did not jump' (it may be booting elsewhere)."""
    clock = Clock()

    def probe():
        return clock.now < 40  # the old kernel answers 40 s (a slow systemctl kexec), then it is gone for good
    with pytest.raises(_jump.NotBack) as info:
        _jump.wait_for_new_boot(lambda: OLD, OLD, 120, 0.5, probe=probe, not_jumped_after=300, clock=clock,
                                sleep=clock.sleep)
    assert not isinstance(info.value, _jump.NotJumped) and info.value.seen_down and info.value.old_answers > 0


def scripted(replies):
    """A read that returns each reply in turn and raises the ones that are exceptions."""
    def read():
        reply = next(replies)
        if isinstance(reply, Exception):
            raise reply
        return reply
    return read


def test_a_failed_read_counts_as_gone_without_a_probe():
    """Through a connection with no banner check: a failed read is the sign the old kernel left."""
    clock = Clock()
    replies = iter([OLD, ConnectionError("reset"), *[OLD] * 1000])

    read = scripted(replies)
    with pytest.raises(_jump.NotBack) as info:
        _jump.wait_for_new_boot(read, OLD, 100, 1, not_jumped_after=10, clock=clock, sleep=clock.sleep)
    assert not isinstance(info.value, _jump.NotJumped) and info.value.seen_down


RUN = "run-1"


def arrival(boot, state, process="gone"):
    """A poll's answer with this run's (RUN's) status in ``state``, or none."""
    line = state if state == "none" else f"{RUN} 4242 777 load {state}"
    return f"{boot}\n{line}\n{'unknown' if state == 'none' else process}\nin\n"


@pytest.mark.parametrize(("state", "why"), [
    ("exit 1", r"the jump command returned \(exit 1\)"),
    ("failed", r"the run on the host \(pid 4242\) failed before it queued the jump"),
    ("running", r"the run on the host \(pid 4242\) ended before it queued the jump"),
])
def test_the_old_boot_says_the_jump_failed_within_one_check(state, why):
    """A probe that still answers (the old kernel is up): one real read every check_every seconds asks it."""
    clock = Clock()
    with pytest.raises(_jump.NotJumped, match=f"the jump did not happen: {why}") as info:
        _jump.wait_for_new_boot(lambda: arrival(OLD, state), OLD, 300, 0.5, probe=lambda: True,
                                not_jumped_after=60, check_every=5, clock=clock, sleep=clock.sleep, run_id=RUN)
    assert clock.now == pytest.approx(5) and info.value.old_answers == 1 and not info.value.seen_down
    assert info.value.status.done == ("load",)  # what the run left, for the rollback


def test_a_started_jump_is_waited_for_and_its_check_returned():
    clock = Clock()
    replies = iter([arrival(OLD, "started"), ConnectionError("reset"), arrival(NEW, "none")])

    read = scripted(replies)
    back = _jump.wait_for_new_boot(read, OLD, 60, 0.5, not_jumped_after=30, clock=clock, sleep=clock.sleep,
                                   run_id=RUN)
    assert back["boot_id"] == NEW and back["check"] == "in" and back["old_answers"] == 1


def test_a_status_after_the_host_was_seen_gone_is_not_a_failed_jump():
    """Seen gone, then the old boot id again with a failed status: unknown (never 'did not jump'), keep waiting."""
    clock = Clock()
    replies = iter([ConnectionError("reset"), *[arrival(OLD, "exit 1")] * 1000])

    read = scripted(replies)
    with pytest.raises(_jump.NotBack) as info:
        _jump.wait_for_new_boot(read, OLD, 20, 1, not_jumped_after=5, clock=clock, sleep=clock.sleep, run_id=RUN)
    assert not isinstance(info.value, _jump.NotJumped) and info.value.seen_down


def test_bounded_abandons_a_hung_call_and_passes_errors_on():
    started = time.monotonic()
    with pytest.raises(_jump.AttemptTimeout, match="a poll: no answer within 0 s"):
        _jump.bounded(lambda: time.sleep(30), 0.2, "a poll")
    assert time.monotonic() - started < 5

    def refused():
        raise ConnectionError("refused")
    with pytest.raises(ConnectionError, match="refused"):
        _jump.bounded(refused, 5, "a poll")
    assert _jump.bounded(lambda: 42, 5, "a poll") == 42


def test_old_answers_are_counted_on_success():
    clock = Clock()
    replies = iter([OLD, OLD, NEW])
    back = _jump.wait_for_new_boot(lambda: next(replies), OLD, 60, 0.25, not_jumped_after=60, clock=clock,
                                   sleep=clock.sleep)
    assert back["old_answers"] == 2 and back["boot_id"] == NEW


@pytest.mark.parametrize(("params", "message"), [
    ({"poll_interval": -1}, "poll_interval is -1; the valid range is 0.05 to 60 seconds"),
    ({"kexec_timeout": 0}, "kexec_timeout is 0; the valid range is 1 to 86400 seconds"),
    ({"not_jumped_after": 10 ** 9}, "not_jumped_after is 1000000000"),
])
def test_jump_option_ranges_are_checked(params, message):
    with pytest.raises(ValueError, match=message):
        check_values(params)
    with pytest.raises(ValueError, match="kernel is ''; state=executed needs the path of the kernel image"):
        check_values({"state": "executed", "kernel": ""})
    check_values({"poll_interval": 0.25, "kexec_timeout": 300})  # in range: no error


class Loaded:
    """A host that says an image is loaded (or not), in its kexec_loaded file too."""

    def __init__(self, loaded, path):
        self.loaded, self.kexec_loaded_path = loaded, str(path)
        path.write_text("1\n" if loaded else "0\n")

    def kexec_loaded(self):
        return self.loaded


class Module:
    """What queue_jump asks of AnsibleModule: a binary's path, and commands as argument lists (setsid runs for real)."""

    def __init__(self, systemd_run=None, rc=0):
        self.systemd_run, self.rc, self.commands = systemd_run, rc, []

    def get_bin_path(self, name):
        return {"systemd-run": self.systemd_run, "setsid": shutil.which("setsid")}.get(name)

    def run_command(self, argv):
        assert isinstance(argv, list)  # never a shell string
        self.commands.append(argv)
        if argv[0].endswith("setsid"):
            proc = subprocess.run(argv, capture_output=True, text=True, timeout=10, check=False)
            return proc.returncode, proc.stdout, proc.stderr
        return self.rc, "", "Failed to start transient service unit" if self.rc else ""


@pytest.fixture
def jump_host(tmp_path, monkeypatch):
    """A kexec that records its -e and fails as a kexec -e that cannot jump does; the status file; no systemd."""
    kexec = tmp_path / "my kexec"  # a path with a space: the job quotes it
    kexec.write_text(f"#!/bin/sh\necho \"$@\" > '{tmp_path}/jumped'\nexit 7\n")
    kexec.chmod(0o755)
    monkeypatch.setattr(paths, "SYSTEMD_RUNTIME", str(tmp_path / "no-systemd"))
    return tmp_path, K.Kexec(Module(), str(tmp_path / "run")), str(tmp_path / "status")


def _text(path):
    return path.read_text() if path.exists() else ""


def _wait_for_text(path, unwanted="", seconds=20):
    deadline = time.monotonic() + seconds  # a detached child may start late on a loaded machine
    while time.monotonic() < deadline and _text(path) == unwanted:
        time.sleep(0.05)  # the shell creates the file before it writes: wait for the text, not the file
    return _text(path)


PREFIX = f"{RUN} 123 456 load"  # a run's status line up to its state


def changes_for(status: str):
    """What queue_jump is given: the changes of a run whose jump status (this process's) is at ``status``."""
    return K.Changes(jump_status.Writer(status, RUN))


def test_the_queued_jump_waits_for_the_run_that_queued_it(jump_host):
    tmp_path, kx, status = jump_host
    run = subprocess.Popen(["sleep", "1"])  # the module's process, still answering the controller
    Loaded(True, tmp_path / "kexec_loaded")
    subprocess.Popen(["/bin/sh", "-c", K.jump_job("kexec", str(tmp_path / "my kexec"), run.pid, status,
                                                  str(tmp_path / "kexec_loaded"), PREFIX)], start_new_session=True)
    run.wait()
    exited = time.time()
    assert _wait_for_text(tmp_path / "jumped") == "-e\n"  # the quoted path with a space ran
    assert (tmp_path / "jumped").stat().st_mtime >= exited  # not before the run that queued it had exited
    assert _wait_for_text(Path(status)) == f"{PREFIX} exit 7\n"  # the failed jump left its status for the next poll
    assert jump_status.parse(_text(Path(status))).state == "exit 7" and not Path(status + ".new").exists()
    assert _jump.jump_failure("exit 7") == "the jump command returned (exit 7) and the host stayed on its old boot"


def test_the_queued_jump_checks_again_that_an_image_is_loaded(jump_host):
    """Unloaded between the queueing and the jump: no jump (systemctl kexec would load its own image), and said so."""
    tmp_path, kx, status = jump_host
    Loaded(False, tmp_path / "kexec_loaded")
    gone = subprocess.Popen(["true"])
    gone.wait()  # the run that queued it has exited
    subprocess.run(["/bin/sh", "-c", K.jump_job("systemctl", "kexec", gone.pid, status, str(tmp_path / "kexec_loaded"),
                                                PREFIX)], check=False, timeout=20)
    assert _text(Path(status)) == f"{PREFIX} not-loaded\n" and not (tmp_path / "jumped").exists()
    assert "no kexec image was loaded any more when the jump was due" in _jump.jump_failure("not-loaded")


def test_the_jump_is_queued_detached_without_systemd(jump_host, monkeypatch):
    tmp_path, kx, status = jump_host
    kx.binary = str(tmp_path / "my kexec")
    monkeypatch.setattr(K, "JUMP_WAIT_STEPS", 2)  # this test's own process is the one the job would wait for
    started = time.monotonic()
    changes = changes_for(status)
    argv = K.queue_jump(kx.module, Loaded(True, tmp_path / "kexec_loaded"), kx, "kexec", changes)
    assert time.monotonic() - started < 2  # returned at once: the job runs on, detached, waiting for this process
    assert argv[1:4] == ["-f", "/bin/sh", "-c"] and kx.module.commands == [argv]
    me = changes.status.status.prefix()
    assert me.startswith(f"{RUN} {os.getpid()} ") and me.endswith(" -")  # this process, nothing changed yet
    assert _text(Path(status)) == f"{me} started\n"  # written before the jump was queued
    assert _wait_for_text(tmp_path / "jumped") == "-e\n"
    assert _wait_for_text(Path(status), f"{me} started\n") == f"{me} exit 7\n"


@pytest.mark.parametrize(("method", "jump"), [("kexec", "'/usr/sbin/my kexec' -e; { printf"),
                                              ("systemctl", "systemctl kexec || { printf")])
def test_the_jump_prefers_a_transient_systemd_unit(jump_host, monkeypatch, method, jump):
    tmp_path, kx, status = jump_host
    (tmp_path / "systemd").mkdir()
    monkeypatch.setattr(paths, "SYSTEMD_RUNTIME", str(tmp_path / "systemd"))
    kx.module, kx.binary = Module("/usr/bin/systemd-run"), "/usr/sbin/my kexec"
    changes = changes_for(status)
    argv = K.queue_jump(kx.module, Loaded(True, tmp_path / "kexec_loaded"), kx, method, changes)
    assert kx.module.commands == [argv] and argv[:5] == ["/usr/bin/systemd-run", "--quiet", "--collect", "/bin/sh", "-c"]
    assert f"while kill -0 {os.getpid()} " in argv[5] and f"; {jump} " in argv[5]
    assert jump_status.parse(_text(Path(status))) == jump_status.Status(RUN, os.getpid(), changes.status.start,
                                                                        (), "started")


@pytest.mark.parametrize(("loaded", "rc", "message"), [
    (False, 0, "no kexec image is loaded right before the jump"),
    (True, 1, "systemd-run could not queue the jump \\(rc 1\\): Failed to start transient service unit"),
])
def test_a_jump_that_cannot_be_queued_raises(jump_host, monkeypatch, loaded, rc, message):
    tmp_path, kx, status = jump_host
    (tmp_path / "systemd").mkdir()
    monkeypatch.setattr(paths, "SYSTEMD_RUNTIME", str(tmp_path / "systemd"))
    with pytest.raises(K.KexecError, match=message):
        K.queue_jump(Module("/usr/bin/systemd-run", rc), Loaded(loaded, tmp_path / "kexec_loaded"), kx, "kexec",
                     changes_for(status))
    time.sleep(0.5)
    assert not (tmp_path / "jumped").exists()


@pytest.mark.parametrize(("dirs", "state"), [(["kho/in", "kho/out"], "in"), (["kho/out"], "no-in"), ([], "no-kho")])
def test_handover_check_runs_in_a_real_shell(tmp_path, dirs, state):
    root = tmp_path / "debug fs; touch pwned"  # a hostile root stays one quoted word
    for d in dirs:
        (root / d).mkdir(parents=True)
    cmd = _jump.handover_check_command(str(root))
    out = subprocess.run(["sh", "-c", cmd], capture_output=True, text=True, check=True).stdout
    assert out.strip() == state
    assert not (tmp_path / "pwned").exists() and not Path("pwned").exists()
    why = _jump.handover_failure(out, str(root))
    assert (why is None) == (state == "in")
    if state == "no-kho":
        assert f"{root}/kho" in why and "verify_handover: false" in why


def test_arrival_is_one_command_with_the_boot_id_first(tmp_path, monkeypatch):
    (tmp_path / "kho" / "in").mkdir(parents=True)
    monkeypatch.setattr(paths, "JUMP_STATUS", str(tmp_path / "no-status"))
    out = subprocess.run(["sh", "-c", _jump.arrival_command(str(tmp_path))], capture_output=True, text=True,
                         check=True).stdout
    monkeypatch.setattr(paths, "RETURN_NOTE", str(tmp_path / "no-note"))
    new, status, process, check, note = _jump.parse_arrival(out)
    assert new == Path(paths.BOOT_ID).read_text().strip() == _jump.controller_boot_id()
    assert status is None and process == paths.RUN_UNKNOWN  # no status: no run named, none of this run's
    assert check == "in" and _jump.handover_failure(check, str(tmp_path)) is None and note is None
    out = subprocess.run(["sh", "-c", _jump.arrival_command(None)], capture_output=True, text=True, check=True).stdout
    assert _jump.parse_arrival(out).check == "unchecked"  # verify_handover off: no debugfs read


def test_the_arrival_carries_the_hosts_note_of_a_return_it_made_by_itself(tmp_path, monkeypatch):
    """The same round trip reads the self-return's note (#36): parsed where it is one, None for anything else."""
    old, new = "0a1b2c3d-0000-4000-8000-000000000001", "0a1b2c3d-0000-4000-8000-000000000002"
    note = tmp_path / "returned"
    monkeypatch.setattr(paths, "RETURN_NOTE", str(note))
    for text, expected in ((f"run-7 {old} {new} 7.3.4 7.2.13 90 returning\n", "returning"),
                           (f"run-7 {old} {new} 7.3.4 7.2.13 90 load-failed 1\n", "load-failed"),
                           ("x" * 5000, None), ("$(reboot) returning\n", None)):
        note.write_text(text)
        out = subprocess.run(["sh", "-c", _jump.arrival_command(None)], capture_output=True, text=True,
                             check=True).stdout
        got = _jump.parse_arrival(out)
        assert got.check == "unchecked" and (got.note or {}).get("state") == expected, (text[:40], got)
        if expected:
            assert got.note["run_id"] == "run-7" and got.note["new_boot_id"] == new and got.note["timeout"] == 90


def test_handover_check_refuses_unexpected_output():
    assert "not one of" in _jump.handover_failure("sudo: a password is required", "/sys/kernel/debug")
    assert "not one of" in _jump.handover_failure("", "/sys/kernel/debug")


RESULTS = {
    "web-1": {"verdict": "verified", "release_before": "7.3.4", "release_after": "7.3.5", "kexec_count": 1,
              "previous_release": "7.3.4", "downtime": 12.5, "failed_step": None,
              "timings": {"preflight": 3.0, "jump": 15.0, "verify": 2.0},
              "regions": [{"name": "oops", "start_before": 0x3EB00000, "start_after": 0x3EB00000, "size": 1048576}]},
    "web-<2>": {"verdict": "failed, rolled back", "failed_step": "Load, jump and wait", "error": "kexec <failed>",
                "timings": {"preflight": 3.5, "jump": None, "verify": None}, "regions": []},
}


def test_live_update_in_the_summary_and_the_page():
    lu = {"method": "systemctl", "incoming_number": 2, "expected_number": 2, "sessions_before": [],
          "units_before": ["cache.service"], "lost": []}
    r = {**RESULTS["web-1"], "liveupdate": lu}
    assert _report.summary_line("web-1", r).endswith(
        "; live update by systemctl: number 2 (expected 2), preserved cache.service")
    r["liveupdate"]["lost"] = ["cache.service came back failed with 0 of its 1 stored fds"]
    assert "LOST cache.service came back failed" in _report.summary_line("web-1", r)
    assert "LOST cache.service came back failed" in _report.render_html({"web-1": r})
    assert "live update" not in _report.summary_line("web-1", RESULTS["web-1"])
    r["boot_phases"] = {"stopping": 3.825, "exit": 0.313, "systemd-shutdown": 0.676, "kernel": 12.018}
    assert _report.summary_line("web-1", r).endswith(
        "; systemd: stopping 3.8 s + exit 0.3 s + systemd-shutdown 0.7 s + kernel 12.0 s")
    assert "systemd: stopping 3.8 s" in _report.render_html({"web-1": r})


def test_summary_line():
    line = _report.summary_line("web-1", RESULTS["web-1"])
    assert line.startswith("web-1: verified; 7.3.4 -> 7.3.5") and "oops 0x3eb00000 -> 0x3eb00000" in line
    assert "at 'Load, jump and wait': kexec <failed>" in _report.summary_line("x", RESULTS["web-<2>"])


def test_html_is_self_contained_and_escaped():
    page = _report.render_html(RESULTS)
    assert "1 of 2 hosts verified" in page
    assert "web-&lt;2&gt;" in page and "kexec &lt;failed&gt;" in page and "<failed>" not in page
    assert not re.search(r"<script|https?://|src=", page)
    assert page.count('class="bar preflight"') == 2 and page.count('class="bar jump"') == 1
    assert "downtime 12.5 s" in page


def test_the_jump_is_drawn_in_its_parts_where_they_were_timed():
    r = {**RESULTS["web-1"], "timings": {"preflight": 3.0, "jump": 15.0, "load": 4.0, "to_gone": 1.0,
                                         "gone_to_banner": 8.5, "banner_to_answer": 1.5, "to_answer": 11.0,
                                         "verify": 2.0}}
    page = _report.render_html({"web-1": r})
    order = ["preflight", "load", "to_gone", "gone_to_banner", "banner_to_answer", "verify"]
    assert [p for p in (*order, "to_answer") if f'class="bar {p}"' in page] == order  # to_answer: the parts' sum
    assert 'class="bar jump"' not in page and "gone to banner 8.5 s (downtime 12.5 s)" in page
    # A wait not watched in parts (no banner check): the load, then the wait as one bar.
    unwatched = {**r, "timings": {**r["timings"], "to_gone": None, "gone_to_banner": None, "banner_to_answer": None}}
    page = _report.render_html({"web-1": unwatched})
    assert 'class="bar load"' in page and "to answer 11.0 s (downtime 12.5 s)" in page
    assert "downtime 12.5 s (preflight 3.0 s, load 4.0 s, to gone 1.0 s, gone to banner 8.5 s, banner to answer 1.5 s, verify 2.0 s);" \
        in _report.summary_line("web-1", r)


def test_a_fleet_page_groups_hosts_by_verdict_failures_first_and_open():
    results = {f"h{i:04d}": {**RESULTS["web-1"]} for i in range(30)}
    results["h0007"] = dict(RESULTS["web-<2>"])
    page = _report.render_html(results)
    groups = re.findall(r'<details class="group"( open)?><summary><h2>([^<]*)</h2>', page)
    assert groups == [(" open", "failed, rolled back: 1 host"), ("", "verified: 29 hosts")]
    assert page.index('id="host-h0007"') < page.index('id="host-h0000"')
    assert page.count("<details open><summary>h0007") == 1 and page.count("<details><summary>h00") == 29


SCALAR = st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=8)
JSON_VALUE = st.recursive(
    SCALAR, lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
    max_leaves=16)
FIELDS = ("verdict", "failed_step", "error", "release_before", "release_after", "kexec_count", "downtime",
          "previous_release", "timings", "regions", "boot_phases")
LIVEUPDATE = st.fixed_dictionaries({}, optional={k: JSON_VALUE for k in (
    "method", "incoming_number", "expected_number", "sessions_before", "units_before", "lost")})
RESULT = st.fixed_dictionaries({}, optional={**{k: JSON_VALUE for k in FIELDS},
                                             "liveupdate": LIVEUPDATE | JSON_VALUE}) | JSON_VALUE
REGION = st.fixed_dictionaries({}, optional={k: JSON_VALUE for k in ("name", "start_before", "start_after", "size")})


@settings(max_examples=300, deadline=None)
@given(st.dictionaries(st.text(max_size=8), RESULT | st.builds(lambda r, g: {**r, "regions": g}, st.fixed_dictionaries(
    {}, optional={k: JSON_VALUE for k in FIELDS}), st.lists(REGION, max_size=3)), max_size=4))
def test_every_renderer_is_total_over_any_json(results):
    """Numbers, strings, nulls, lists or NaN where numbers were expected: a page and a line each, never a raise."""
    page = _report.render_html(results)
    assert page.startswith("<!DOCTYPE html>") and not re.search(r"<script|https?://|src=", page)
    for host, r in results.items():
        line = _report.summary_line(host, r)
        assert not re.search(r"[\x00-\x08\x0b-\x1f\x7f-\x9f]", line)


def test_a_null_as_ansible_core_2_16_renders_it_is_no_failure():
    """2.16 templates without native types: the role's null failed_step and numbers arrive as strings."""
    r = {**RESULTS["web-1"], "failed_step": "", "downtime": "12.5", "kexec_count": "1"}
    assert _report.summary_line("web-1", r).startswith("web-1: verified; 7.3.4 -> 7.3.5")
    page = _report.render_html({"web-1": r})
    assert 'class="error"' not in page and "downtime 12.5 s" in page


def test_terminal_output_never_carries_an_escape_sequence():
    line = _report.summary_line("h\x1b]0;owned\x07", {"verdict": "verified\x1b[2J", "error": "x", "failed_step": "s\r"})
    assert "\x1b" not in line and "\x07" not in line and "\r" not in line
    assert "h\\x1b]0;owned\\x07: verified\\x1b[2J at 's\\x0d'" in line


def test_report_files_are_written_atomically_and_private(tmp_path):
    target = tmp_path / "report.html"
    target.write_text("old")
    target.chmod(0o644)
    _report.write_private(str(target), "new")
    assert target.read_text() == "new" and stat.S_IMODE(target.stat().st_mode) == 0o600
    old = os.umask(0o277)
    try:
        _report.write_private(str(target), "newer")
    finally:
        os.umask(old)
    assert stat.S_IMODE(target.stat().st_mode) == 0o400  # a stricter umask wins
    assert [p.name for p in tmp_path.iterdir()] == ["report.html"]  # no temporary file left

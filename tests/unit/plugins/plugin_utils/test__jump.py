"""plugin_utils/_jump.py (this file is test__jump: tests/integration/test_jump.py is the lab's jump): waiting for the
new boot (its polls, the probe, the bounds), the arrival command and its handover check, and kho_kexec's decisions as
pure functions (whether a host that did not come back jumped, whose image a rollback unloads, what a jump that came
back amounts to), decided from fields only."""

from __future__ import annotations

import subprocess
import time
from pathlib import Path

import pytest

from ansible_collections.kexec.kho.plugins.module_utils._kho import jump_status
from ansible_collections.kexec.kho.plugins.plugin_utils import _jump
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


def test_failed_reads_in_a_row_count_as_gone_without_a_probe():
    """Through a connection with no banner check: GONE_AFTER failed reads in a row are the sign the old kernel left."""
    clock = Clock()
    replies = iter([OLD, *[ConnectionError("reset")] * _jump.GONE_AFTER, *[OLD] * 1000])

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
    replies = iter([*[ConnectionError("reset")] * _jump.GONE_AFTER, *[arrival(OLD, "exit 1")] * 1000])

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
    new, status, process, check, note, _after = _jump.parse_arrival(out)
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


BACK = {"boot_id": NEW, "check": "in", "attempts": 3, "waited": 20.0, "first_answer": 19.0}


@pytest.mark.parametrize("seen_down, old_answers, jumped", [
    (True, 0, None),   # gone and never back: it may have jumped
    (True, 4, None),   # answered on the old boot, then gone: it may have jumped late
    (False, 0, None),  # never answered at all: unknown
    (False, 3, False),  # still on its old boot, never seen gone: it did not jump
])
def test_a_wait_without_a_new_boot_is_unknown_unless_the_old_boot_kept_answering(seen_down, old_answers, jumped):
    assert _jump.after_not_back(_jump.NotBack("x", old_answers, seen_down)) is jumped


LOST = {"triggered": None, "msg": "connection reset"}


def mine(done):
    return jump_status.Status("run-1", 4242, "777", done, "running")


@pytest.mark.parametrize("load, status, whose", [
    ({"triggered": True, "loaded_here": True}, None, "this run loaded"),
    ({"triggered": True, "loaded_here": False}, None, None),  # loaded before this run: never unloaded by it
    (LOST, mine(("load",)), "this run loaded (the load's answer was lost; its jump status on the host says so)"),
    (LOST, mine(("finalize",)), None),  # it finalized, and never loaded
    (LOST, None, None),  # it never said who it is on the host: it changed nothing
])
def test_a_rollback_unloads_only_an_image_this_run_loaded_as_its_answer_or_its_status_says(load, status, whose):
    assert _jump.unload_plan(_jump.left_by_run(load, status)) == whose


def test_the_rollback_says_what_it_did():
    whose = "this run loaded"
    assert _jump.unload_outcome(None, None) == ("the image was loaded before this run and is left as it was", False)
    assert "so it changed nothing" in _jump.unload_outcome(None, None, "none")[0]
    assert _jump.unload_outcome(whose, {"changed": True}) == ("the image this run loaded was unloaded", True)
    assert _jump.unload_outcome(whose, {"changed": False}) == ("no image was loaded any more", False)
    assert _jump.unload_outcome(whose, {"failed": True, "msg": "EBUSY"}) == (
        "unloading the image this run loaded failed: EBUSY", False)


def test_the_verdict_of_a_jump_that_came_back():
    ok = _jump.verdict(BACK, 21.04, {"rc": 0}, "/sys/kernel/debug")
    assert ok == {"handover_received": True, "msg": f"back on boot {NEW} after 21.0 s"}
    unchecked = _jump.verdict(BACK, 21.0, {"rc": 0}, None)
    assert unchecked["handover_received"] is None and "failed" not in unchecked
    for check, words in (("no-in", "received no handover data"), ("no-kho", "/sys/kernel/debug/kho directory"),
                         ("garbage", "not one of")):
        out = _jump.verdict({**BACK, "check": check}, 21.0, {"rc": 0}, "/sys/kernel/debug")
        assert out["failed"] is True and out["handover_received"] is False and words in out["msg"], out
        assert out["failed_check"] == "verification", out
    failed = _jump.verdict(BACK, 21.0, {"rc": 1, "stderr": "nope"}, "/sys/kernel/debug")
    assert failed == {"failed": True, "failed_check": "test_command",
                      "msg": "the host is back on a new boot, but the test command failed: nope"}
    assert "failed_check" not in ok and "failed_check" not in unchecked


def test_the_wait_is_one_state_object_whose_phases_are_spans_between_its_states():
    clock = [0.0]
    answers = iter([OSError("gone"), OSError("gone"), f"{NEW}\nnone\nin\n"])

    def read():
        value = next(answers)
        if isinstance(value, Exception):
            raise value
        return value
    events = []
    wait = _jump.Wait(read, "11111111-2222-3333-4444-555555555555", 60, 1.0, clock=lambda: clock[0],
                      sleep=lambda s: clock.__setitem__(0, clock[0] + s), on_event=lambda e, t: events.append((e, t)))
    back = wait.run()
    assert back["boot_id"] == NEW and wait.seen_down and wait.gone == 0.0 and wait.attempts == 3
    assert [e for e, _t in events] == [_jump.EVENT_GONE, _jump.EVENT_BACK]
    assert set(_jump.wait_phases(back, False)) == set(_jump.WAIT_PHASES)


# ---------------------------------------------------------------- #37 item 1: the run's own word, as a wait reads it

OLD = "11111111-2222-3333-4444-555555555555"


def answers(*lines):
    """A read returning each poll answer in turn (the last one repeated)."""
    replies = list(lines)

    def read():
        return replies.pop(0) if len(replies) > 1 else replies[0]
    return read


def arrival_of(boot, state=None, process="unknown", run="run-1", done="-"):
    line = f"{run} 4242 777 {done} {state}" if state else "none"
    return f"{boot}\n{line}\n{process}\nin\n"


def wait(read, old_id=OLD, **kw):
    clock = Clock()
    w = _jump.Wait(read, old_id, kw.pop("timeout", 300), 0.5, clock=clock, sleep=clock.sleep, run_id="run-1", **kw)
    return w, clock


def test_no_status_yet_is_waited_for_until_not_jumped_after_then_nothing_of_this_run_is_undone():
    """The race of #37 item 1: the old boot answers before the run wrote its status; never 'did not jump' at once."""
    w, clock = wait(answers(arrival_of(OLD)), not_jumped_after=60)
    with pytest.raises(_jump.NotJumped, match="60 s after the trigger") as info:
        w.run()
    assert clock.now >= 60 and info.value.status is None and _jump.after_not_back(info.value) is False
    assert _jump.left_by_run({"triggered": None}, info.value.status)["loaded_here"] is False


def test_a_run_alive_without_the_jump_queued_outlasts_not_jumped_after_and_ends_unknown():
    w, clock = wait(answers(arrival_of(OLD, "running", "alive")), not_jumped_after=60, timeout=120)
    with pytest.raises(_jump.NotBack) as info:
        w.run()
    assert not isinstance(info.value, _jump.NotJumped) and clock.now >= 120 and info.value.running
    assert _jump.after_not_back(info.value) is None and "was still running" in str(info.value)


def test_a_run_whose_process_is_gone_before_it_queued_did_not_jump_at_once():
    w, clock = wait(answers(arrival_of(OLD, "running", "alive"), arrival_of(OLD, "running", "gone", done="load")),
                    not_jumped_after=60)
    with pytest.raises(_jump.NotJumped, match=r"ended before it queued the jump") as info:
        w.run()
    assert clock.now < 5 and info.value.status.done == ("load",)
    assert _jump.left_by_run({"triggered": None}, info.value.status)["loaded_here"] is True


def test_a_run_that_answered_without_status_never_ran_and_did_not_jump_even_without_the_old_boot_id():
    """The module answered (it ended) and no status of this run is on the host: it changed nothing, queued nothing;
    the boot that answers is the one it ran on."""
    w, clock = wait(answers(arrival_of(OLD)), old_id=None, ended=True)
    with pytest.raises(_jump.NotJumped, match="ended without writing its jump status") as info:
        w.run()
    assert _jump.after_not_back(info.value) is False and clock.now < 1 and w.old_id == OLD


def test_another_runs_status_counts_as_none_of_this_run():
    w, _clock = wait(answers(arrival_of(OLD, "exit 1", "gone", run="earlier")), not_jumped_after=30)
    with pytest.raises(_jump.NotJumped, match="30 s after the trigger") as info:
        w.run()
    assert info.value.status is None  # not the earlier run's 'exit 1', and nothing of its to undo


def test_a_poll_answer_is_read_bounded():
    huge = arrival_of(OLD, "started") + "x" * 10_000_000
    parsed = _jump.parse_arrival(huge)
    assert parsed.boot_id == OLD and parsed.status.state == "started"


def test_the_new_kernel_on_its_way_back_by_itself_is_not_the_arrival():
    """The host's own return (#36): between its note and its jump the new kernel may still answer; the arrival is
    the boot after it, with the note, never the leaving kernel's answer."""
    home = "99999999-8888-7777-6666-555555555555"
    note = f"run-1 {OLD} {NEW} 7.3.4 7.2.13 60 returning"
    w, _clock = wait(answers(arrival_of(OLD, "started", "alive"), arrival_of(NEW) + note + "\n", arrival_of(home) + note + "\n"))
    back = w.run()
    assert back["boot_id"] == home and back["note"]["new_boot_id"] == NEW and back["note"]["state"] == "returning"
    other = f"run-2 {OLD} {NEW} 7.3.4 7.2.13 60 returning"  # another run's note: this run's kernel is the arrival
    w, _clock = wait(answers(arrival_of(OLD, "started", "alive"), arrival_of(NEW) + other + "\n"))
    assert w.run()["boot_id"] == NEW


def test_one_miss_is_no_outage_and_the_old_boot_still_says_the_jump_failed():
    """The lab's flake (2026-12-07): one SSH banner probe missed on a busy controller, the old boot then said 'exit 1',
    and the wait took the miss for the kernel gone, ignored the old boot's word and ran out its 300 s: unknown, the
    image left loaded.  One miss, by the probe or by a read, is no outage."""
    for probe_answers, replies in (([True, False, *[True] * 1000], [arrival(OLD, "exit 1")] * 1000),
                                   (None, [ConnectionError("reset"), *[arrival(OLD, "exit 1")] * 1000])):
        clock = Clock()
        answers_ = iter(probe_answers) if probe_answers else None
        with pytest.raises(_jump.NotJumped, match=r"the jump command returned \(exit 1\)") as info:
            _jump.wait_for_new_boot(scripted(iter(replies)), OLD, 300, 0.5,
                                    probe=(lambda a=answers_: next(a)) if answers_ else None, not_jumped_after=60,
                                    clock=clock, sleep=clock.sleep, run_id=RUN, check_every=1)
        assert clock.now < 30 and info.value.old_answers > 0


def test_a_new_boot_after_a_single_miss_is_timed_from_that_miss():
    clock = Clock()
    replies = iter([ConnectionError("gone"), arrival(NEW, "none")])
    back = _jump.wait_for_new_boot(scripted(replies), OLD, 60, 0.5, clock=clock, sleep=clock.sleep, run_id=RUN)
    assert back["boot_id"] == NEW and back["gone"] is not None and back["gone"] <= back["waited"]

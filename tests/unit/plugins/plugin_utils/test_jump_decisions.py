# Copyright (c) kexec.kho contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
"""kho_kexec's decisions as pure functions: whether a host that did not come back jumped, whose image a rollback
unloads, and what a jump that came back amounts to.  Decided from fields only."""

from __future__ import annotations

import pytest

from ansible_collections.kexec.kho.plugins.module_utils._kho import jump_status
from ansible_collections.kexec.kho.plugins.plugin_utils import _jump
from test_jump_report import Clock  # pylint: disable=import-error

NEW = "aaaaaaaa-bbbb-cccc-dddd-eeeeeeeeeeee"
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


def arrival(boot, state=None, process="unknown", run="run-1", done="-"):
    line = f"{run} 4242 777 {done} {state}" if state else "none"
    return f"{boot}\n{line}\n{process}\nin\n"


def wait(read, old_id=OLD, **kw):
    clock = Clock()
    w = _jump.Wait(read, old_id, kw.pop("timeout", 300), 0.5, clock=clock, sleep=clock.sleep, run_id="run-1", **kw)
    return w, clock


def test_no_status_yet_is_waited_for_until_not_jumped_after_then_nothing_of_this_run_is_undone():
    """The race of #37 item 1: the old boot answers before the run wrote its status; never 'did not jump' at once."""
    w, clock = wait(answers(arrival(OLD)), not_jumped_after=60)
    with pytest.raises(_jump.NotJumped, match="60 s after the trigger") as info:
        w.run()
    assert clock.now >= 60 and info.value.status is None and _jump.after_not_back(info.value) is False
    assert _jump.left_by_run({"triggered": None}, info.value.status)["loaded_here"] is False


def test_a_run_alive_without_the_jump_queued_outlasts_not_jumped_after_and_ends_unknown():
    w, clock = wait(answers(arrival(OLD, "running", "alive")), not_jumped_after=60, timeout=120)
    with pytest.raises(_jump.NotBack) as info:
        w.run()
    assert not isinstance(info.value, _jump.NotJumped) and clock.now >= 120 and info.value.running
    assert _jump.after_not_back(info.value) is None and "was still running" in str(info.value)


def test_a_run_whose_process_is_gone_before_it_queued_did_not_jump_at_once():
    w, clock = wait(answers(arrival(OLD, "running", "alive"), arrival(OLD, "running", "gone", done="load")),
                    not_jumped_after=60)
    with pytest.raises(_jump.NotJumped, match=r"ended before it queued the jump") as info:
        w.run()
    assert clock.now < 5 and info.value.status.done == ("load",)
    assert _jump.left_by_run({"triggered": None}, info.value.status)["loaded_here"] is True


def test_a_run_that_answered_without_status_never_ran_and_did_not_jump_even_without_the_old_boot_id():
    """The module answered (it ended) and no status of this run is on the host: it changed nothing, queued nothing;
    the boot that answers is the one it ran on."""
    w, clock = wait(answers(arrival(OLD)), old_id=None, ended=True)
    with pytest.raises(_jump.NotJumped, match="ended without writing its jump status") as info:
        w.run()
    assert _jump.after_not_back(info.value) is False and clock.now < 1 and w.old_id == OLD


def test_another_runs_status_counts_as_none_of_this_run():
    w, _clock = wait(answers(arrival(OLD, "exit 1", "gone", run="earlier")), not_jumped_after=30)
    with pytest.raises(_jump.NotJumped, match="30 s after the trigger") as info:
        w.run()
    assert info.value.status is None  # not the earlier run's 'exit 1', and nothing of its to undo


def test_a_poll_answer_is_read_bounded():
    huge = arrival(OLD, "started") + "x" * 10_000_000
    parsed = _jump.parse_arrival(huge)
    assert parsed.boot_id == OLD and parsed.status.state == "started"


def test_the_new_kernel_on_its_way_back_by_itself_is_not_the_arrival():
    """The host's own return (#36): between its note and its jump the new kernel may still answer; the arrival is
    the boot after it, with the note, never the leaving kernel's answer."""
    home = "99999999-8888-7777-6666-555555555555"
    note = f"run-1 {OLD} {NEW} 7.3.4 7.2.13 60 returning"
    w, _clock = wait(answers(arrival(OLD, "started", "alive"), arrival(NEW) + note + "\n", arrival(home) + note + "\n"))
    back = w.run()
    assert back["boot_id"] == home and back["note"]["new_boot_id"] == NEW and back["note"]["state"] == "returning"
    other = f"run-2 {OLD} {NEW} 7.3.4 7.2.13 60 returning"  # another run's note: this run's kernel is the arrival
    w, _clock = wait(answers(arrival(OLD, "started", "alive"), arrival(NEW) + other + "\n"))
    assert w.run()["boot_id"] == NEW

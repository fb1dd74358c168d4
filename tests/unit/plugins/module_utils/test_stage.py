"""A staged load (kho_kexec stage_ttl, issue 38): its expiry run under sh as the host runs it, the stage's load, and
the switch that takes it up.  Simulated trees and a fake kexec; the lab runs it on a guest (test_staged.py)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import time
from types import SimpleNamespace

import pytest
from fakehost import FakeModule, make_host, params, state_dir_default  # noqa: F401  pylint: disable=import-error,unused-import

from ansible_collections.kexec.kho.plugins.module_utils._kho import kexec as K
from ansible_collections.kexec.kho.plugins.module_utils._kho import jump_status, lock, paths, stage

RUN = "ctl:4242:98765:1f2e3d"
OWNER = {"run": RUN, "target": "web-1"}


def _hold(lock_path, run=RUN):
    lock.acquire(str(lock_path), {"run": run, "target": "web-1"})


def _expiry(tmp_path, line=None, holder=RUN, kexec_rc=0):
    """A state dir with a record, ``staged`` (``line``) and the lock held by ``holder``; the expiry's job for a stage
    of RUN, run under sh with a fake kexec that logs its argv.  Returns the dir."""
    state = tmp_path / "run"
    state.mkdir()
    (state / "loaded.json").write_text("{}")
    mine = f"{RUN} 00112233 {int(time.time()) + 60}"
    if line is not False:
        (state / stage.STAGED).write_text((line or mine) + "\n")
    if holder:
        _hold(state / "handover.lock", holder)
    fake = tmp_path / "kexec"
    fake.write_text(f"#!/bin/sh\necho \"$@\" >> {tmp_path}/kexec.log\nexit {kexec_rc}\n")
    fake.chmod(0o755)
    job = stage.expiry_job(mine, RUN, str(state), str(fake), "/boot/vmlinuz-7.3.4 x", str(state / "handover.lock"))
    subprocess.run([shutil.which("dash") or "/bin/sh", "-c", job], check=True, timeout=30)
    return state


def test_the_expiry_unloads_notes_and_releases_the_lock_of_its_run(tmp_path):
    state = _expiry(tmp_path)
    assert (tmp_path / "kexec.log").read_text() == "-u\n"
    assert not (state / "loaded.json").exists() and not (state / stage.STAGED).exists()
    assert not (state / "handover.lock").exists()
    note = stage.read(str(state))["expired"]
    assert note["run"] == RUN and note["state"] == stage.UNLOADED and note["kernel"] == "/boot/vmlinuz-7.3.4 x"
    assert abs(note["at"] - time.time()) < 30 and stage.read(str(state))["staged"] is None


def test_the_expiry_leaves_another_runs_lock(tmp_path):
    state = _expiry(tmp_path, holder="other:1:2:3")
    assert (tmp_path / "kexec.log").read_text() == "-u\n"
    assert lock.read(str(state / "handover.lock"))["run"] == "other:1:2:3"


@pytest.mark.parametrize("line", [False, f"{RUN} 99999999 {int(time.time()) + 60}"], ids=["taken up", "staged again"])
def test_an_expiry_whose_stage_was_taken_up_or_replaced_does_nothing(tmp_path, line):
    state = _expiry(tmp_path, line=line)
    assert not (tmp_path / "kexec.log").exists() and (state / "loaded.json").exists()
    assert lock.read(str(state / "handover.lock"))["run"] == RUN and stage.read(str(state))["expired"] is None


def test_an_unload_that_fails_is_noted_and_the_record_kept(tmp_path):
    state = _expiry(tmp_path, kexec_rc=1)
    assert stage.read(str(state))["expired"]["state"] == stage.UNLOAD_FAILED and (state / "loaded.json").exists()


@pytest.fixture(autouse=True)
def systemd(tmp_path, monkeypatch):
    """systemd runs on the simulated host (its runtime directory exists)."""
    (tmp_path / "systemd").mkdir()
    monkeypatch.setattr(paths, "SYSTEMD_RUNNING", str(tmp_path / "systemd"))


def _stage(tmp_path, loaded=False, generation="live-cold", check_mode=False, queue_rc=0, ttl=600):
    kho = make_host(tmp_path, generation, loaded=loaded)
    mod = FakeModule(kho, check_mode=check_mode, queue_rc=queue_rc)
    kx = K.Kexec(mod, str(tmp_path / "run"))
    # The lock where kho_lock was told, apart from the state directory: the stage binds to the option's lock.
    return kho, mod, kx, params(tmp_path, stage_ttl=ttl, owner=OWNER, staged=False, replace_loaded=False,
                                lock_path=str(tmp_path / "locks" / "handover.lock"))


def test_a_stage_loads_and_starts_its_expiry_as_one_systemd_timer(tmp_path):
    kho, mod, kx, p = _stage(tmp_path)
    res = K.stage_load(mod, kho, kx, p)
    assert res["loaded_here"] and kho.kexec_loaded() and res["staged"]["run"] == RUN
    timer = mod.commands[-1]
    assert timer[:4] == ["/usr/bin/systemd-run", "--quiet", "--collect", "--on-active=600"] and timer[4:6] == ["/bin/sh", "-c"]
    assert stage.mine(kx.state_dir, OWNER) and not stage.mine(kx.state_dir, {"run": "other:1:2:3"})


@pytest.mark.parametrize(("setup", "message"), [
    ({"loaded": True}, "an image is loaded that kexec.kho did not load"),
    ({"generation": "finalize-6.16"}, "staging is refused on a kernel with a finalize state"),
    ({"ttl": 86401}, "stage_ttl is 86401"),
])
def test_a_stage_is_refused_before_it_changes_anything_or_undone(tmp_path, setup, message):
    kho, mod, kx, p = _stage(tmp_path, **setup)
    before = kho.kexec_loaded()
    with pytest.raises((K.KexecError, stage.StageError), match=message):
        K.stage_load(mod, kho, kx, p)
    assert kho.kexec_loaded() is before and stage.read(kx.state_dir)["staged"] is None


def test_a_stage_onto_a_recorded_load_is_refused(tmp_path):
    kho, mod, kx, p = _stage(tmp_path)
    K.ensure_loaded(mod, kho, kx, {**p, "stage_ttl": 0})
    with pytest.raises(K.KexecError, match=r"an image is loaded already \(recorded\)"):
        K.stage_load(mod, kho, kx, p)
    assert kho.kexec_loaded() and kx.read_record() and stage.read(kx.state_dir)["staged"] is None


def test_a_stage_whose_expiry_cannot_start_is_unloaded(tmp_path):
    kho, mod, kx, p = _stage(tmp_path, queue_rc=1)
    with pytest.raises(K.KexecError, match="expiry could not be started"):
        K.stage_load(mod, kho, kx, p)
    assert kho.kexec_loaded() is False and kx.read_record() is None and stage.read(kx.state_dir)["staged"] is None


def test_a_dry_run_stage_loads_nothing(tmp_path):
    kho, mod, kx, p = _stage(tmp_path, check_mode=True)
    res = K.stage_load(mod, kho, kx, p)
    assert res["staged"] is None and res["msg"] == "would load, staged" and not kho.kexec_loaded()


@pytest.fixture(name="queued")
def queued_fixture(monkeypatch):
    monkeypatch.setattr(K, "queue_jump", lambda mod, host, kx, method, changes: ["queued", method])


def _switch(mod, kho, kx, p, tmp_path):
    return K.start_jump(mod, kho, kx, {**p, "staged": True, "stage_ttl": 0, "pmsg": None},
                        K.Changes(status=None))


def test_the_switch_takes_up_the_staged_load_without_loading_again(tmp_path, queued):
    kho, mod, kx, p = _stage(tmp_path)
    K.stage_load(mod, kho, kx, p)
    _hold(p["lock_path"])
    loads = len([c for c in mod.commands if c[1:3] == ["-s", "-l"]])
    res = _switch(mod, kho, kx, p, tmp_path)
    assert res["reused_staged"] and res["loaded_here"] and res["triggered"]
    assert len([c for c in mod.commands if c[1:3] == ["-s", "-l"]]) == loads  # no second load
    assert stage.read(kx.state_dir)["staged"] is None  # its expiry has nothing left to do


def test_a_switch_whose_stage_expired_loads_again(tmp_path, queued):
    kho, mod, kx, p = _stage(tmp_path)
    K.stage_load(mod, kho, kx, p)
    _hold(p["lock_path"])
    stage.disarm(kx.state_dir)
    res = _switch(mod, kho, kx, p, tmp_path)
    assert res["reused_staged"] is False and res["reloaded"]


def test_a_switch_without_the_stages_lock_changes_nothing(tmp_path, queued):
    kho, mod, kx, p = _stage(tmp_path)
    K.stage_load(mod, kho, kx, p)
    _hold(p["lock_path"], "other:1:2:3")
    commands = len(mod.commands)
    with pytest.raises(stage.StageError, match="no longer holds its handover lock .*held by 'other:1:2:3'"):
        _switch(mod, kho, kx, p, tmp_path)
    assert len(mod.commands) == commands and kho.kexec_loaded() and stage.mine(kx.state_dir, OWNER)


def test_an_unload_of_the_staged_load_leaves_any_other(tmp_path):
    kho, mod, kx, p = _stage(tmp_path)
    K.stage_load(mod, kho, kx, p)
    kept = K.ensure_unloaded(mod, kho, kx, {"run": "other:1:2:3"})
    assert kept["changed"] is False and kho.kexec_loaded() and "nothing unloaded" in kept["msg"]
    gone = K.ensure_unloaded(mod, kho, kx, OWNER)
    assert gone["changed"] and not kho.kexec_loaded() and stage.read(kx.state_dir)["staged"] is None
    K.ensure_loaded(mod, kho, kx, {**p, "stage_ttl": 0})  # loaded, not staged: a staged-only unload leaves it
    assert K.ensure_unloaded(mod, kho, kx, OWNER)["changed"] is False and kho.kexec_loaded()


# The switch by one shell command (stage.switch_script): written by the stage, run under sh as the controller runs
# it (stage.switch_command), with a fake kexec; setsid runs for real (no systemd on the simulated host).
REQUEST = "ab" * 32
JUMP_RUN = "0123456789abcdef0123456789abcdef"


@pytest.fixture(name="switch")
def switch_fixture(tmp_path, monkeypatch):
    """A stage of RUN that knows its request, the lock held by RUN, a fake kexec (its argv logged); returns a
    function that runs the switch's command with these values (overridable) and returns what it said."""
    if not shutil.which("setsid"):
        pytest.skip("setsid (util-linux) is not on this machine")
    monkeypatch.setattr(paths, "JUMP_STATUS", str(tmp_path / "jump-status"))
    fake = tmp_path / "fake kexec"
    fake.write_text(f"#!/bin/sh\necho \"$@\" >> '{tmp_path}/kexec.log'\nexit 0\n")
    fake.chmod(0o755)
    kho, mod, kx, p = _stage(tmp_path)
    kx.binary = str(fake)
    owner = {**OWNER, "request": REQUEST}
    res = K.stage_load(mod, kho, kx, {**p, "owner": owner})  # its expiry a (fake) systemd timer
    # The switch's script as a host without systemd has it: the jump queued by setsid, for real.
    monkeypatch.setattr(paths, "SYSTEMD_RUNNING", str(tmp_path / "no-systemd"))
    line = (tmp_path / "run" / stage.STAGED).read_text().strip()
    answer = json.loads((tmp_path / "run" / stage.SWITCH_ANSWER).read_text())
    stage.write_switch(kx.state_dir, K.switch_script(kho, kx, {**p, "owner": owner}, res, line), answer)
    _hold(p["lock_path"])
    boot = open(paths.BOOT_ID, encoding="ascii").read().strip()

    def run(path=None, **kw):
        args = {"jump_run": JUMP_RUN, "boot_id": boot, "owner": owner, "request": REQUEST, **kw}
        cmd = stage.switch_command(kx.state_dir, args["jump_run"], args["boot_id"], {**args["owner"], "request": args["request"]})
        env = {"PATH": f"{path}:/usr/sbin:/usr/bin:/sbin:/bin" if path else "/usr/sbin:/usr/bin:/sbin:/bin"}
        out = subprocess.run([shutil.which("dash") or "/bin/sh", "-c", cmd], capture_output=True, text=True,
                             timeout=30, check=True, env=env)
        return stage.switch_answer(out.stdout)
    return SimpleNamespace(run=run, kho=kho, kx=kx, stage=res, log=tmp_path / "kexec.log",
                           status=tmp_path / "jump-status", lock=p["lock_path"], tmp=tmp_path)


def _wait_for(path, text, seconds=15):
    end = time.monotonic() + seconds
    while time.monotonic() < end and text not in (path.read_text() if path.exists() else ""):
        time.sleep(0.05)
    return path.read_text() if path.exists() else ""


def test_the_switch_takes_the_stage_up_and_queues_the_jump_in_one_command(switch):
    assert switch.stage["staged"]["switch"].endswith(stage.SWITCH_SH)
    said = switch.run()
    assert said["word"] == "queued", said
    answer = said["answer"]
    assert answer["kernel"] == switch.stage["kernel"] and answer["way_back"] and answer["python"]
    assert stage.read(switch.kx.state_dir)["staged"] is None  # taken up: its expiry has nothing left to do
    status = jump_status.parse(_wait_for(switch.status, "exit"))
    assert (status.run, status.done, status.state) == (JUMP_RUN, ("load",), "exit 0")  # the fake's -e returned
    assert _wait_for(switch.log, "-e").splitlines() == ["-e"]


@pytest.mark.parametrize(("change", "why"), [
    ({"request": "cd" * 32}, "request"),
    ({"owner": {"run": "other:1:2:3"}}, "request"),
    ({"boot_id": "00000000-0000-0000-0000-000000000000"}, "boot"),
    ({"jump_run": "bad;run"}, "arguments"),
])
def test_a_switch_that_is_not_its_stages_changes_nothing(switch, change, why):
    said = switch.run(**change)
    assert (said["word"], said["why"]) == ("fallback", why)
    assert stage.read(switch.kx.state_dir)["staged"]["run"] == RUN and not switch.status.exists()
    assert not switch.log.exists() and switch.kho.kexec_loaded()


def test_a_switch_whose_lock_or_load_is_gone_changes_nothing(switch):
    os.unlink(switch.lock)
    _hold(switch.lock, "other:1:2:3")
    assert switch.run()["why"] == "lock"
    os.unlink(switch.lock)
    _hold(switch.lock)
    with open(switch.kho.kexec_loaded_path, "w") as fh:
        fh.write("0\n")
    assert switch.run()["why"] == "not-loaded"
    stage.disarm(switch.kx.state_dir)
    assert switch.run()["why"] == "no-script" and not switch.status.exists()


def test_a_switch_that_cannot_queue_the_jump_unloads_what_it_took_up(switch):
    bad = switch.tmp / "bin"
    bad.mkdir()
    (bad / "setsid").write_text("#!/bin/sh\nexit 1\n")
    (bad / "setsid").chmod(0o755)
    said = switch.run(path=str(bad))
    assert (said["word"], said["why"], said["state"]) == ("failed", "queue", stage.UNLOADED)
    assert switch.log.read_text().splitlines() == ["-u"] and switch.kx.read_record() is None
    status = jump_status.parse(switch.status.read_text())
    assert (status.run, status.done, status.state) == (JUMP_RUN, (), "failed")


@pytest.mark.parametrize("stdout", ["", "KHO-SWITCH", "noise\nKHO-SWITCH-ANSWER\n" + "[" * 100000 + "\nKHO-SWITCH queued\n",
                                    "x" * (stage.ANSWER_BYTES * 3)])
def test_what_a_host_says_for_its_switch_is_read_bounded(stdout):
    said = stage.switch_answer(stdout)
    assert said["answer"] is None and said["word"] in (None, "queued")


def test_a_switch_answer_through_a_pty_is_read_as_sent():
    """become with a tty (sudo's requiretty) carries the output with CR LF: the words and the answer are the same."""
    sent = f"{stage.MARK}-ANSWER\n" + '{"kernel": "/boot/vmlinuz"}' + f"\n{stage.MARK} queued\n"
    assert stage.switch_answer(sent.replace("\n", "\r\n")) == stage.switch_answer(sent) == {
        "word": "queued", "why": None, "state": None, "answer": {"kernel": "/boot/vmlinuz"}}

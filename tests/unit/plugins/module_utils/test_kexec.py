# Copyright (c) kexec.kho contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
"""kho_kexec on the host (module_utils/_kho/kexec.py and the module's main) for #37: an image loaded outside this
run, an image the record names that may have been replaced, the module's own failures, and the jump status the run
writes before it changes anything.  Simulated trees, kexec faked at run_command (tests/fakehost.py)."""

from __future__ import annotations

import json
import os
import shutil
import stat
import subprocess
import sys
import time
from pathlib import Path

import pytest
from fakehost import BZIMAGE, FakeModule, make_host, params, state_dir_default  # noqa: F401  pylint: disable=import-error,unused-import

from ansible_collections.kexec.kho.plugins.module_utils._kho import host as H
from ansible_collections.kexec.kho.plugins.module_utils._kho import jump_status, paths
from ansible_collections.kexec.kho.plugins.module_utils._kho import kexec as K
from ansible_collections.kexec.kho.plugins.modules import kho_kexec as module
from ansible_collections.kexec.kho.plugins.module_utils._kho.kexec import check_values
from ansible_collections.kexec.kho.plugins.plugin_utils import _jump

MODULE = [sys.executable, "-m", "ansible_collections.kexec.kho.plugins.modules.kho_kexec"]


def loads(mod) -> list:
    return [c for c in mod.commands if c[1:3] == ["-s", "-l"]]


def unloads(mod) -> list:
    return [c for c in mod.commands if c[1:] == ["-u"]]


@pytest.fixture
def status(tmp_path, monkeypatch):
    """systemd runs (its runtime directory), and the jump status is under tmp_path."""
    (tmp_path / "systemd").mkdir()
    monkeypatch.setattr(paths, "SYSTEMD_RUNNING", str(tmp_path / "systemd"))
    monkeypatch.setattr(paths, "JUMP_STATUS", str(tmp_path / "jump-status"))
    return tmp_path / "jump-status"


def changes(status_path) -> K.Changes:
    return K.Changes(jump_status.Writer(str(status_path), "run-1"))


# ---------------------------------------------------------------- an image loaded outside this run

def test_an_image_loaded_by_hand_is_named_and_left_loaded(tmp_path, fixtures, status):
    """#37, first paragraph: `kexec -s -l` by hand before the run: the load is refused before any change, naming it,
    and the jump too; nothing is loaded over it and nothing unloads it."""
    kho = make_host(tmp_path, "live-cold", loaded=True)  # loaded, and no record of this collection's
    mod = FakeModule(kho)
    kx = K.Kexec(mod, str(tmp_path / "run"))
    for run in (lambda: K.ensure_loaded(mod, kho, kx, params(tmp_path)),
                lambda: K.start_jump(mod, kho, kx, params(tmp_path), changes(status))):
        with pytest.raises(K.KexecError, match="loaded by hand with kexec -l or -s -l.*unload it first.*set replace_loaded: true"):
            run()
    assert not loads(mod) and not unloads(mod) and kho.kexec_loaded() is True
    assert jump_status.parse(status.read_text()).state == paths.JUMP_FAILED  # said: this run will not jump
    plan = K.preflight(mod, kho, params(tmp_path), {})
    assert plan["ok"] is False and "this run did not load it and leaves it as it is" in plan["msg"]


def test_an_image_other_than_the_record_names_is_named_with_the_record(tmp_path, fixtures):
    kho = make_host(tmp_path, "live-cold")
    mod = FakeModule(kho)
    kx = K.Kexec(mod, str(tmp_path / "run"))
    K.ensure_loaded(mod, kho, kx, params(tmp_path))
    with pytest.raises(K.KexecError, match=r"kexec.kho's last load on this boot was .*vmlinuz with the command line"):
        K.ensure_loaded(mod, kho, kx, params(tmp_path, append="quiet"))
    assert len(loads(mod)) == 1


def test_an_image_replaced_when_asked_is_said_and_this_runs_to_undo(tmp_path, fixtures, status):
    """replace_loaded: the other image is replaced, and said; a rollback unloads this run's image, the only one it
    can (the replaced one is gone)."""
    kho = make_host(tmp_path, "live-cold", loaded=True)
    mod = FakeModule(kho)
    res = K.ensure_loaded(mod, kho, K.Kexec(mod, str(tmp_path / "run")), params(tmp_path, replace_loaded=True))
    assert res["loaded_before"] == K.LOADED_OTHER and res["loaded_here"] is True and res["previous"] is None
    assert res["msg"] == "loaded, replacing an image loaded outside this run (replace_loaded)"
    kho = make_host(tmp_path / "second", "live-cold", loaded=True)
    mod = FakeModule(kho, queue_rc=1)
    with pytest.raises(K.KexecError, match="could not queue the jump.*nothing was jumped: the image unloaded"):
        K.start_jump(mod, kho, K.Kexec(mod, str(tmp_path / "second-run")), params(tmp_path, replace_loaded=True),
                     changes(status))
    assert len(loads(mod)) == 1 and len(unloads(mod)) == 1


def test_kexec_loaded_unreadable_is_not_taken_for_nothing_loaded(tmp_path, fixtures):
    kho = make_host(tmp_path, "live-cold")
    os.unlink(kho.kexec_loaded_path)
    mod = FakeModule(kho)
    with pytest.raises(K.KexecError, match="whether an image is loaded is unknown"):
        K.ensure_loaded(mod, kho, K.Kexec(mod, str(tmp_path / "run")), params(tmp_path))
    assert not loads(mod)


# ---------------------------------------------------------------- #37 item 10a: the record is not the kernel's word

def test_the_jump_loads_again_the_image_its_record_names_and_a_rollback_leaves_it(tmp_path, fixtures, status):
    """The record and kexec_loaded=1 say the image is loaded; another loader may have replaced it since: the jump
    loads it again (what is jumped into is what was checked), and a rollback leaves it loaded as it was before."""
    kho = make_host(tmp_path, "live-cold")
    mod = FakeModule(kho, queue_rc=1)
    kx = K.Kexec(mod, str(tmp_path / "run"))
    staged = K.ensure_loaded(mod, kho, kx, params(tmp_path))  # state=loaded earlier, on this boot
    assert K.ensure_loaded(mod, kho, kx, params(tmp_path))["changed"] is False  # state=loaded stays idempotent
    with pytest.raises(K.KexecError) as info:  # the jump cannot be queued (here: no jump status): rolled back
        K.start_jump(mod, kho, kx, params(tmp_path))
    assert len(loads(mod)) == 2  # loaded again right before the jump
    assert not unloads(mod) and kho.kexec_loaded() is True and kx.read_record() is not None, info.value
    assert staged["loaded_before"] == K.LOADED_NOTHING and staged["loaded_here"] is True
    queued = FakeModule(kho)
    jumped = K.start_jump(queued, kho, K.Kexec(queued, str(tmp_path / "run")), params(tmp_path), changes(status))
    assert jumped["reloaded"] is True and jumped["loaded_here"] is False and loads(queued)
    assert jumped["loaded_before"] == K.LOADED_RECORDED and jumped["target"]["status"] == "compatible"


# ---------------------------------------------------------------- #37 item 4: the module's own failures

def test_a_path_through_a_file_is_refused_by_name(tmp_path):
    passwd = tmp_path / "passwd"
    passwd.write_text("root:x:0:0::/root:/bin/sh\n")
    with pytest.raises(K.KexecError, match=r"kernel image .*passwd/vmlinuz cannot be read: Not a directory"):
        K.image_kind(str(passwd / "vmlinuz"))
    with pytest.raises(K.KexecError, match=r"initrd .*passwd/initrd cannot be read: Not a directory"):
        K.check_readable(str(passwd / "initrd"), "initrd")


def test_any_failure_after_the_load_is_undone(tmp_path, fixtures, monkeypatch):
    """Not only a KexecError: whatever fails once the image is loaded (here the record's write) unloads it."""
    kho = make_host(tmp_path, "live-cold")
    mod = FakeModule(kho)
    kx = K.Kexec(mod, str(tmp_path / "run"))

    def full(_record):
        raise OSError(28, "No space left on device")
    monkeypatch.setattr(kx, "write_record", full)
    with pytest.raises(K.KexecError, match="No space left on device; nothing was jumped: the image unloaded"):
        K.ensure_loaded(mod, kho, kx, params(tmp_path))
    assert kho.kexec_loaded() is False and len(unloads(mod)) == 1


def test_the_real_module_answers_an_odd_path_as_its_own_failure(tmp_path, fixtures):
    """The module, as Ansible runs it, on `kernel: /etc/passwd/vmlinuz`: a failure it answers (triggered false,
    nothing left), never a traceback the action would take for a lost answer."""
    import simtree  # pylint: disable=import-error

    opts = simtree.build("live-cold", tmp_path / "host")
    passwd = tmp_path / "passwd"
    passwd.write_text("root:x:0:0::/root:/bin/sh\n")
    argfile = tmp_path / "args.json"
    argfile.write_text(json.dumps({"ANSIBLE_MODULE_ARGS": {
        "_ansible_check_mode": False, "state": "loaded", "kernel": str(passwd / "vmlinuz"),
        "state_dir": str(tmp_path / "run"), **opts}}))
    root = Path(K.__file__).resolve().parents[6]
    proc = subprocess.run([*MODULE, str(argfile)], capture_output=True, text=True, check=False, timeout=60,
                          env={**os.environ, "PYTHONPATH": str(root)})
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    assert out["failed"] and out["triggered"] is False and "cannot be read: Not a directory" in out["msg"], out
    assert out["loaded_here"] is False and out["finalized_here"] is False


class ParamsModule(FakeModule):
    """FakeModule with the module's params (state_run reads them)."""

    def __init__(self, kho, p: dict, **kw):
        super().__init__(kho, **kw)
        self.params = {"expect_boot_id": None, "_internal": None, "mount_debugfs": False, "state": "executed",
                       "run_id": "run-1", **p}


def statuses(monkeypatch) -> list:
    """Every status the run writes, in order, as (state, done)."""
    seen = []
    real = jump_status.Writer.write

    def write(self, state, done):
        seen.append((state, tuple(done)))
        return real(self, state, done)
    monkeypatch.setattr(jump_status.Writer, "write", write)
    return seen


def test_executed_says_who_it_is_before_any_change_and_each_change_after(tmp_path, fixtures, status, monkeypatch):
    """#37 item 1, the host's side: the run's status (run id, pid, start time) is on the host before anything
    changes (here: before debugfs could be mounted), then after the load, then before the jump is queued."""
    kho = make_host(tmp_path, "live-cold")
    mod = ParamsModule(kho, params(tmp_path))
    seen = statuses(monkeypatch)
    at_mount = []
    real_mount = H.ensure_debugfs
    monkeypatch.setattr(H, "ensure_debugfs", lambda m, k: at_mount.append(status.read_text()) or real_mount(m, k))
    res = module.state_run(mod, kho, K.Kexec(mod, str(tmp_path / "run")), K.Changes())
    first = jump_status.parse(at_mount[0])
    assert (first.run, first.pid, first.state, first.done) == ("run-1", os.getpid(), paths.JUMP_RUNNING, ())
    assert first.start == jump_status.process_start(os.getpid())
    assert seen == [("running", ()), ("running", ("load",)), ("started", ("load",))]
    assert res["triggered"] is True and res["loaded_here"] is True


def test_a_run_that_fails_says_so_in_its_status_with_nothing_left(tmp_path, fixtures, status, monkeypatch):
    kho = make_host(tmp_path, "live-cold")
    mod = ParamsModule(kho, params(tmp_path), queue_rc=1)
    seen = statuses(monkeypatch)
    done = K.Changes()
    with pytest.raises(K.KexecError, match="nothing was jumped: the image unloaded"):
        module.state_run(mod, kho, K.Kexec(mod, str(tmp_path / "run")), done)
    assert seen[-1] == ("failed", ()) and (done.loaded, done.finalized) == (False, False)
    assert jump_status.parse(status.read_text()).state == paths.JUMP_FAILED


def test_a_run_refused_before_any_change_writes_no_status(tmp_path, fixtures, status):
    """The host on another boot than expected: refused before the status, as before any change."""
    kho = make_host(tmp_path, "live-cold")
    mod = ParamsModule(kho, params(tmp_path))
    mod.params["expect_boot_id"] = "00000000-0000-0000-0000-000000000000"
    with pytest.raises(K.KexecError, match="not the expected"):
        module.state_run(mod, kho, K.Kexec(mod, str(tmp_path / "run")), K.Changes())
    assert not status.exists() and not mod.commands


def test_executed_without_the_actions_run_id_is_refused_before_any_change(tmp_path, fixtures, status):
    kho = make_host(tmp_path, "live-cold")
    mod = ParamsModule(kho, params(tmp_path))
    mod.params["run_id"] = None
    with pytest.raises(jump_status.StatusError, match="run_id is None"):
        module.state_run(mod, kho, K.Kexec(mod, str(tmp_path / "run")), K.Changes())
    assert not status.exists() and not mod.commands


# The options' ranges, and the queued jump (kexec.jump_job, queue_jump) on a host that says what is loaded.

RUN = "run-1"  # the action's run id, as the jump status names it


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
    monkeypatch.setattr(paths, "SYSTEMD_RUNNING", str(tmp_path / "no-systemd"))
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
    monkeypatch.setattr(paths, "SYSTEMD_RUNNING", str(tmp_path / "systemd"))
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
    monkeypatch.setattr(paths, "SYSTEMD_RUNNING", str(tmp_path / "systemd"))
    with pytest.raises(K.KexecError, match=message):
        K.queue_jump(Module("/usr/bin/systemd-run", rc), Loaded(loaded, tmp_path / "kexec_loaded"), kx, "kexec",
                     changes_for(status))
    time.sleep(0.5)
    assert not (tmp_path / "jumped").exists()


# ---------------------------------------------------------------- the states against simulated trees (kexec faked)

def test_load_then_idempotent_then_unload(tmp_path, fixtures):
    kho = make_host(tmp_path, "live-cold")
    mod = FakeModule(kho)
    kx = K.Kexec(mod, str(tmp_path / "run"))
    p = params(tmp_path, append="quiet")
    res = K.ensure_loaded(mod, kho, kx, p)
    assert res["changed"] and res["loaded"]
    assert res["cmdline"].endswith("reserve_mem=4M:2M:trace quiet")
    load = [c for c in mod.commands if c[1:3] == ["-s", "-l"]]
    assert load == [["/usr/sbin/kexec", "-s", "-l", p["kernel"], f"--command-line={res['cmdline']}"]]
    again = K.ensure_loaded(mod, kho, kx, p)
    assert again["changed"] is False and again["previous"]["kernel_sha256"] == res["kernel_sha256"]
    assert len([c for c in mod.commands if c[1:3] == ["-s", "-l"]]) == 1
    changed = K.ensure_loaded(mod, kho, kx, {**p, "append": "quiet loglevel=3", "replace_loaded": True})
    assert changed["changed"] and changed["loaded_before"] == K.LOADED_OTHER
    gone = K.ensure_unloaded(mod, kho, kx)
    assert gone["changed"] and kho.kexec_loaded() is False and kx.read_record() is None
    assert K.ensure_unloaded(mod, kho, kx)["changed"] is False


def test_the_plan_is_what_preflight_check_mode_and_the_load_share_and_undo_says_what_it_undid(tmp_path, fixtures):
    kho = make_host(tmp_path, "live-cold")
    mod = FakeModule(kho)
    kx = K.Kexec(mod, str(tmp_path / "run"))
    p = params(tmp_path)
    result, steps = K.plan_load(mod, kho, kx, p)
    assert steps == ["load"] and not mod.commands[1:] and not kho.kexec_loaded()  # planned: kexec --help only
    assert K.planned(result, steps)["msg"] == "would load" and K.preflight(mod, kho, p, {})["msg"] == "would load"
    done = K.do_load(kho, kx, result, steps)
    assert done["loaded_here"] and kho.kexec_loaded() and K.plan_load(mod, kho, kx, p)[1] == []
    assert K.undo(kho, False, kx) == ["the image unloaded"] and not kho.kexec_loaded() and kx.read_record() is None
    assert K.undo(kho, False) == []
    failing = K.KexecError("the pstore message could not be written")
    with pytest.raises(K.KexecError) as info:
        K.back_out(kho, failing, False)
    assert info.value is failing  # nothing to undo: the error itself


def test_a_load_onto_nothing_is_in_the_jump_status_before_kexec_runs(tmp_path, fixtures, monkeypatch):
    """#37 item 1 (lab: test_a_run_killed_after_its_load_did_not_jump_and_its_load_is_undone): a run killed between
    kexec -l and its next word leaves a status that says to unload; a load that fails unloads nothing."""
    from ansible_collections.kexec.kho.plugins.module_utils._kho import jump_status

    kho = make_host(tmp_path, "live-cold")
    mod = FakeModule(kho)
    kx = K.Kexec(mod, str(tmp_path / "run"))
    result, steps = K.plan_load(mod, kho, kx, params(tmp_path))
    path = str(tmp_path / "status")
    seen = []
    real = kx.load

    def load(*args):
        seen.append(jump_status.parse(open(path).read()).done)
        return real(*args)

    monkeypatch.setattr(kx, "load", load)
    changes = K.Changes(jump_status.Writer(path, "run-1"))
    assert K.do_load(kho, kx, result, steps, changes)["loaded_here"] and seen == [(paths.DONE_LOAD,)]
    K.undo(kho, False, kx)

    def refused(*args):
        raise K.KexecError("kexec -s -l failed (rc 1)")

    monkeypatch.setattr(kx, "load", refused)
    changes, before = K.Changes(jump_status.Writer(path, "run-2")), len(mod.commands)
    with pytest.raises(K.KexecError) as info:
        K.do_load(kho, kx, result, steps, changes)
    assert str(info.value) == "kexec -s -l failed (rc 1)" and not [c for c in mod.commands[before:] if "-u" in c]
    assert jump_status.parse(open(path).read()).done == () and not kho.kexec_loaded()


def test_the_target_image_is_read_once_per_image_and_never_cached_in_check_mode(tmp_path, fixtures, monkeypatch):
    """Preflight reads (decompresses) the target; the load on the same boot takes that answer, for that image only."""
    kho = make_host(tmp_path, "live-cold")
    reads = []
    real = K.image.inspect
    monkeypatch.setattr(K.image, "inspect", lambda path, *a: reads.append(path) or real(path, *a))
    p = params(tmp_path)
    dry = FakeModule(kho, check_mode=True)
    K.plan_load(dry, kho, K.Kexec(dry, str(tmp_path / "run")), p)
    assert reads == [p["kernel"]] and not (tmp_path / "run" / K.IMAGE_CACHE).exists()  # a dry run writes nothing
    mod = FakeModule(kho)
    kx = K.Kexec(mod, str(tmp_path / "run"))
    first = K.preflight(mod, kho, {**p, "state_dir": str(tmp_path / "run")}, {})
    again = K.ensure_loaded(mod, kho, kx, p)
    assert len(reads) == 2 and first["target"] == again["target"] and again["loaded_here"]
    assert stat.S_IMODE((tmp_path / "run" / K.IMAGE_CACHE).stat().st_mode) == 0o600
    other = tmp_path / "other"
    other.write_bytes(BZIMAGE + b"\0")  # another image (another sha256): read again
    K.plan_load(mod, kho, kx, {**p, "kernel": str(other), "replace_loaded": True})
    assert reads[-1] == str(other) and len(reads) == 3


def test_a_method_that_would_lose_a_luo_session_is_refused_before_the_load(tmp_path, fixtures):
    kho = make_host(tmp_path, "live-cold")
    open(os.path.join(kho.devfs, "liveupdate"), "w").close()
    fd_dir = os.path.join(kho.procfs, "167", "fd")
    os.makedirs(fd_dir)
    os.symlink("anon_inode:[luo_session] test-session", os.path.join(fd_dir, "5"))
    mod = FakeModule(kho)
    kx = K.Kexec(mod, str(tmp_path / "run"))
    with pytest.raises(K.KexecError, match="method systemctl would lose session test-session held by pid 167"):
        K.ensure_loaded(mod, kho, kx, params(tmp_path, method="systemctl"))
    assert not [c for c in mod.commands if c[1:3] == ["-s", "-l"]] and not kho.kexec_loaded()
    # auto: kexec -e keeps a process's sessions, for a target with LUO on (the simulated line has no liveupdate=on)
    res = K.ensure_loaded(mod, kho, kx, params(tmp_path, append="liveupdate=on"))
    assert res["method"] == "kexec" and res["accepted_loss"] == [] and kho.kexec_loaded()


def test_executed_loads_writes_the_pstore_message_and_queues_the_jump_in_one_run(tmp_path, fixtures, monkeypatch,
                                                                                 status):
    kho = make_host(tmp_path, "live-cold")
    monkeypatch.setattr(K, "queue_jump", lambda mod, host, kx, method, changes: ["queued", method])  # the status: below
    mod = FakeModule(kho)
    res = K.start_jump(mod, kho, K.Kexec(mod, str(tmp_path / "run")), params(tmp_path, pmsg="canary-1"))
    assert res["triggered"] is True and res["trigger"] == ["queued", "kexec"] and kho.kexec_loaded()
    with open(res["pmsg_path"]) as fh:
        assert fh.read() == "canary-1"


@pytest.mark.parametrize(("queue_rc", "pmsg_dir", "message"), [
    (1, True, "systemd-run could not queue the jump \\(rc 1\\): Failed to connect to bus"),
    (0, False, "cannot write the pstore message"),
])
def test_executed_undoes_its_load_when_the_jump_cannot_be_queued(tmp_path, fixtures, status, queue_rc, pmsg_dir,
                                                                 message):
    kho = make_host(tmp_path, "live-cold")
    if not pmsg_dir:
        kho.devfs = str(tmp_path / "no-dev")
    mod = FakeModule(kho, queue_rc=queue_rc)
    kx = K.Kexec(mod, str(tmp_path / "run"))
    changes = K.Changes(K.jump_status.Writer(str(status), "run-1"))
    with pytest.raises(K.KexecError, match=message) as info:
        K.start_jump(mod, kho, kx, params(tmp_path, pmsg="canary-1"), changes)
    assert str(info.value).endswith("nothing was jumped: the image unloaded")
    assert kho.kexec_loaded() is False and kx.read_record() is None and mod.commands[-1][1:] == ["-u"]


def test_executed_in_check_mode_queues_nothing(tmp_path, fixtures, status):
    kho = make_host(tmp_path, "live-cold")
    mod = FakeModule(kho, check_mode=True)
    res = K.start_jump(mod, kho, K.Kexec(mod, str(tmp_path / "run")), params(tmp_path, pmsg="x"))
    assert res["triggered"] is False and not kho.kexec_loaded() and not status.exists()
    assert not [c for c in mod.commands if "systemd-run" in c[0]]


def test_a_host_on_another_boot_than_expected_is_refused(tmp_path, fixtures):
    kho = make_host(tmp_path, "live-cold")
    K.check_boot(kho, kho.boot_id())  # still on it: no error
    K.check_boot(kho, None)
    with pytest.raises(K.KexecError, match="not the expected 00000000-.*rebooted since it was read; nothing was"):
        K.check_boot(kho, "00000000-0000-0000-0000-000000000000")


def test_check_mode_loads_nothing(tmp_path, fixtures):
    kho = make_host(tmp_path, "live-cold")
    mod = FakeModule(kho, check_mode=True)
    res = K.ensure_loaded(mod, kho, K.Kexec(mod, str(tmp_path / "run")), params(tmp_path))
    assert res["changed"] and not kho.kexec_loaded()
    assert not [c for c in mod.commands if c[1:3] == ["-s", "-l"]]
    assert not os.path.exists(tmp_path / "run")


def test_someone_elses_load_is_replaced_when_asked(tmp_path, fixtures):
    kho = make_host(tmp_path, "live-cold", loaded=True)  # loaded, but no record of ours
    mod = FakeModule(kho)
    res = K.ensure_loaded(mod, kho, K.Kexec(mod, str(tmp_path / "run")), params(tmp_path, replace_loaded=True))
    assert res["changed"] and res["previous"] is None and res["loaded_before"] == K.LOADED_OTHER


@pytest.mark.parametrize(("form", "aborts"), [("6.16", True), ("6.19", False)])
def test_failed_load_rolls_back_the_finalize(tmp_path, fixtures, monkeypatch, form, aborts):
    kho = make_host(tmp_path, f"finalize-{form}", form, monkeypatch)
    mod = FakeModule(kho, load_rc=1)
    with pytest.raises(K.KexecError) as info:
        K.ensure_loaded(mod, kho, K.Kexec(mod, str(tmp_path / "run")), params(tmp_path, finalize=True))
    assert "Exec format error" in str(info.value)
    if aborts:
        assert str(info.value).endswith("nothing was jumped: the finalize done by this task aborted")
        assert kho.finalized() is False
    else:
        assert "undoing it failed" in str(info.value) and "unloaded" in str(info.value)
    assert kho.kexec_loaded() is False


def test_finalize_era_refuses_unfinalized_load_without_the_option(tmp_path, fixtures, monkeypatch):
    kho = make_host(tmp_path, "finalize-6.16", "6.16", monkeypatch)
    mod = FakeModule(kho)
    with pytest.raises(K.KexecError, match="finalize: true"):
        K.ensure_loaded(mod, kho, K.Kexec(mod, str(tmp_path / "run")), params(tmp_path))
    assert mod.commands == [["/usr/sbin/kexec", "--help"]] and kho.fake.writes == []


@pytest.mark.parametrize(("setup", "message"), [
    (lambda p, t: {**p, "kernel": str(t / "missing")}, "does not exist"),
    (lambda p, t: {**p, "kernel": str(t)}, "is a directory"),
    (lambda p, t: {**p, "initrd": str(t / "missing.img")}, "initrd .* does not exist"),
])
def test_preflight_refuses_before_any_change(tmp_path, fixtures, setup, message):
    kho = make_host(tmp_path, "live-cold")
    mod = FakeModule(kho)
    with pytest.raises(K.KexecError, match=message):
        K.ensure_loaded(mod, kho, K.Kexec(mod, str(tmp_path / "run")), setup(params(tmp_path), tmp_path))
    assert not [c for c in mod.commands if c[1:3] == ["-s", "-l"]]


def test_not_a_kernel_image(tmp_path):
    junk = tmp_path / "junk"
    junk.write_bytes(b"\x7fELF" + b"\0" * 1000)
    with pytest.raises(K.KexecError, match="not a kernel image that kexec -s loads"):
        K.image_kind(str(junk))


def test_kexec_without_s(tmp_path, fixtures):
    kho = make_host(tmp_path, "live-cold")
    mod = FakeModule(kho, has_s=False)
    with pytest.raises(K.KexecError, match="2.0.14 or later"):
        K.ensure_loaded(mod, kho, K.Kexec(mod, str(tmp_path / "run")), params(tmp_path))


@pytest.mark.parametrize(("running", "kw", "expected"), [
    ("BOOT_IMAGE=/vmlinuz root=/dev/sda ro", {}, "root=/dev/sda ro kho=on"),
    ("root=/dev/sda kho=off", {}, "root=/dev/sda kho=on"),
    ("root=/dev/sda kho=y", {}, "root=/dev/sda kho=y"),
    ("root=/dev/sda", {"append": "quiet"}, "root=/dev/sda quiet kho=on"),
    ("root=/dev/sda", {"cmdline": "root=/dev/vdb"}, "root=/dev/vdb kho=on"),
    ("root=/dev/sda", {"cmdline": "root=/dev/vdb", "ensure_kho": False}, "root=/dev/vdb"),
    ("root=/dev/sda -- single", {}, "root=/dev/sda kho=on -- single"),
])
def test_target_cmdline(running, kw, expected):
    assert K.target_cmdline(running, **kw) == expected


def test_competing_loaders(tmp_path):
    defaults = tmp_path / "kexec"
    defaults.write_text('LOAD_KEXEC="true"\n')
    (tmp_path / "systemd").mkdir()
    found = K.competing_loaders(str(defaults), str(tmp_path / "systemd"))
    assert len(found) == 2 and "without -s" in found[0]
    defaults.write_text("LOAD_KEXEC=false\n")
    assert len(K.competing_loaders(str(defaults), str(tmp_path / "nothing"))) == 0


def test_preflight_reports_what_a_load_would_do_and_changes_nothing(tmp_path, fixtures):
    kho = make_host(tmp_path, "live-cold")
    mod = FakeModule(kho)  # not in check mode: preflight must not load all the same
    kernel = params(tmp_path)["kernel"]
    images = {"kernel": kernel, "initrd": None}
    res = K.preflight(mod, kho, {"append": "quiet", "state_dir": str(tmp_path / "run")}, images)
    assert res["ok"] and res["msg"] == "would load" and res["kernel"] == kernel and res["method"] == "kexec"
    assert res["cmdline"].endswith(" quiet") and res["argv"][:3] == ["/usr/sbin/kexec", "-s", "-l"]
    assert not kho.kexec_loaded() and not [c for c in mod.commands if c[1:3] == ["-s", "-l"]]
    assert os.listdir(tmp_path / "run") == [K.IMAGE_CACHE]  # no record: only the reading of the target image


def test_preflight_decides_from_the_live_update_its_run_gathered(tmp_path, fixtures, monkeypatch):
    from ansible_collections.kexec.kho.plugins.module_utils._kho import liveupdate
    kho = make_host(tmp_path, "live-cold")
    open(os.path.join(kho.devfs, "liveupdate"), "w").close()
    gathered = liveupdate.gather(kho.devfs, kho.procfs, kho.cmdline(), None, FakeModule(kho).run_command)
    gathered["sessions"] = [{"pid": 167, "name": "test-session", "comm": "luo-test", "unit": None}]

    def again(*_args):
        raise AssertionError("live update gathered twice in one run")
    monkeypatch.setattr(liveupdate, "gather", again)
    images = {"kernel": params(tmp_path)["kernel"], "initrd": None}
    res = K.preflight(FakeModule(kho), kho, {"method": "systemctl"}, images, gathered)
    assert res["ok"] is False and "method systemctl would lose session test-session held by pid 167" in res["msg"]
    assert K.preflight(FakeModule(kho), kho, {"append": "liveupdate=on"}, images, gathered)["method"] == "kexec"


@pytest.mark.parametrize(("generation", "options", "images", "message"), [
    ("live-cold", {}, {"kernel": None, "initrd": None}, "no kernel image found for the running release"),
    ("live-cold", {"kernel": "/nonexistent/vmlinuz"}, {}, "kernel image /nonexistent/vmlinuz does not exist"),
    ("finalize-6.16", {}, "the image", "finalize: true"),  # not finalized, and finalize not allowed
])
def test_preflight_reports_a_refusal_instead_of_failing(tmp_path, fixtures, generation, options, images, message):
    kho = make_host(tmp_path, generation)
    if images == "the image":
        images = {"kernel": params(tmp_path)["kernel"], "initrd": None}
    res = K.preflight(FakeModule(kho), kho, options, images)
    assert res["ok"] is False and message in res["msg"]


def test_a_rollback_disarms_the_hosts_own_return_this_run_armed(tmp_path, fixtures):
    """Noted in the jump status before it is armed (a killed run's status says to disarm), undone first."""
    kho = make_host(tmp_path, "live-cold")
    calls = []
    changes = K.Changes(disarm=lambda: calls.append("disarm"))
    changes.did(paths.DONE_RETURN)
    assert changes.done() == (paths.DONE_RETURN,)
    assert changes.undo(kho, None) == ["the host's own return disarmed"] and calls == ["disarm"]
    assert changes.done() == () and changes.undo(kho, None) == []


def test_preflight_says_whether_kho_or_the_load_refused(tmp_path, fixtures):
    """#39's dry run lists every refusal: the role takes KHO's from the facts' reason, the load's from here."""
    off = make_host(tmp_path, "builtin-off")
    got = K.preflight(FakeModule(off), off, params(tmp_path), {})
    assert got["ok"] is False and got["refused_by"] == "kho" and "KHO is not active" in got["msg"], got
    missing = K.preflight(FakeModule(off), off, params(tmp_path, kernel=str(tmp_path / "vmlinuz-7.3.5")), {})
    assert missing["refused_by"] == "load" and "vmlinuz-7.3.5 does not exist" in missing["msg"], missing

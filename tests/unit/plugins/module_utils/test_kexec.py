# Copyright (c) kexec.kho contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
"""kho_kexec on the host (module_utils/_kho/kexec.py and the module's main) for #37: an image loaded outside this
run, an image the record names that may have been replaced, the module's own failures, and the jump status the run
writes before it changes anything.  Simulated trees, kexec faked at run_command (test_state_modules' fakes)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest
from test_state_modules import FakeModule, make_host, params, state_dir_default  # noqa: F401  pylint: disable=import-error,unused-import

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
    monkeypatch.setattr(paths, "SYSTEMD_RUNTIME", str(tmp_path / "systemd"))
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

# Copyright (c) kexec.kho contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
"""kho_kexec on the host (module_utils/_kho/kexec.py and the module's main) for #37: an image loaded outside this
run, an image the record names that may have been replaced, the module's own failures, and the jump status the run
writes before it changes anything.  Simulated trees, kexec faked at run_command (test_state_modules' fakes)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from test_state_modules import FakeModule, make_host, params, state_dir_default  # noqa: F401  pylint: disable=import-error,unused-import

from ansible_collections.kexec.kho.plugins.module_utils._kho import host as H
from ansible_collections.kexec.kho.plugins.module_utils._kho import jump_status, paths
from ansible_collections.kexec.kho.plugins.module_utils._kho import kexec as K
from ansible_collections.kexec.kho.plugins.modules import kho_kexec as module

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
        self.params = {"expect_boot_id": None, "refuse_boot_id": None, "mount_debugfs": False, "state": "executed",
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

"""State logic of kho_finalize and kho_kexec against simulated trees, with kexec faked at run_command."""

from __future__ import annotations

import errno
import os
import stat

import kimage
import pytest
import simtree

from ansible_collections.kexec.kho.plugins.module_utils._kho import finalize as F
from ansible_collections.kexec.kho.plugins.module_utils._kho import host as H
from ansible_collections.kexec.kho.plugins.module_utils._kho import kexec as K
from ansible_collections.kexec.kho.plugins.module_utils._kho import paths

BZIMAGE = kimage.bzimage()  # a 7.3.4-like image: reads every format the lab kernel hands over


class FakeKernelFinalize:
    """out/finalize with the kernel's write rules for one finalize form."""

    def __init__(self, kho: H.KhoHost, form: str):
        self.kho, self.form, self.writes = kho, form, []

    def __call__(self, value):
        self.writes.append(value)
        current = self.kho.finalized()
        if self.form == "6.16" and bool(value) == current:
            raise OSError(errno.EEXIST if value else errno.ENOENT, "refused")
        if self.form == "6.19" and value == 0:
            raise OSError(errno.EINVAL, "Invalid argument")
        with open(self.kho.finalize_path, "w") as fh:
            fh.write(f"{value}\n")


def make_host(tmp_path, generation, form=None, monkeypatch=None, loaded=False):
    opts = simtree.build(generation, tmp_path / generation, kexec_loaded=loaded)
    kho = H.from_params(opts)
    if form:
        fake = FakeKernelFinalize(kho, form)
        monkeypatch.setattr(kho, "write_finalize", fake)
        kho.fake = fake
    return kho


@pytest.mark.parametrize("form", ["6.16", "6.19"])
def test_finalize_is_idempotent_and_reads_first(tmp_path, fixtures, monkeypatch, form):
    kho = make_host(tmp_path, f"finalize-{form}", form, monkeypatch)
    first = F.transition(kho, True, check_mode=False)
    assert (first["changed"], first["before"], first["after"]) == (True, False, True)
    second = F.transition(kho, True, check_mode=False)
    assert second["changed"] is False and kho.fake.writes == [1]


def test_abort_first_form(tmp_path, fixtures, monkeypatch):
    kho = make_host(tmp_path, "finalize-6.16", "6.16", monkeypatch)
    F.transition(kho, True, False)
    res = F.transition(kho, False, False)
    assert res["changed"] and res["after"] is False
    assert F.transition(kho, False, False)["changed"] is False
    assert kho.fake.writes == [1, 0]


def test_abort_second_form_says_unload(tmp_path, fixtures, monkeypatch):
    kho = make_host(tmp_path, "finalize-6.19", "6.19", monkeypatch)
    F.transition(kho, True, False)
    with pytest.raises(F.FinalizeError, match="kho_kexec state=unloaded"):
        F.transition(kho, False, False)


def test_check_mode_writes_nothing(tmp_path, fixtures, monkeypatch):
    kho = make_host(tmp_path, "finalize-6.16", "6.16", monkeypatch)
    res = F.transition(kho, True, check_mode=True)
    assert res["changed"] and res["after"] is True and kho.fake.writes == [] and kho.finalized() is False


def test_live_era_is_an_honest_noop(tmp_path, fixtures):
    kho = make_host(tmp_path, "live-cold")
    res = F.transition(kho, True, False)
    assert res == {**res, "changed": False, "finalize_supported": False, "before": None, "after": None}
    assert "no finalize state" in res["msg"]


def test_no_kho_names_the_parameter(tmp_path, fixtures):
    with pytest.raises(F.FinalizeError, match="kho=on"):
        F.transition(make_host(tmp_path, "builtin-off"), True, False)


# ---------------------------------------------------------------- kho_kexec

@pytest.fixture(autouse=True)
def state_dir_default(tmp_path, monkeypatch):
    """Nothing a test here runs writes under the controller's own /run/kexec-kho (preflight's default)."""
    monkeypatch.setitem(K.ARGUMENT_SPEC["state_dir"], "default", str(tmp_path / "default-state"))


class FakeModule:
    def __init__(self, kho: H.KhoHost, check_mode=False, load_rc=0, has_s=True, queue_rc=0):
        self.kho, self.check_mode, self.load_rc, self.has_s = kho, check_mode, load_rc, has_s
        self.queue_rc, self.commands = queue_rc, []

    def get_bin_path(self, name):
        return {"kexec": "/usr/sbin/kexec", "systemd-run": "/usr/bin/systemd-run"}.get(name)

    def run_command(self, argv):
        assert isinstance(argv, list)  # never a shell string
        self.commands.append(argv)
        if argv[0] == "systemctl":
            return 127, "", "systemctl: not found"
        if argv[0] == "/usr/bin/systemd-run":
            return self.queue_rc, "", "Failed to connect to bus" if self.queue_rc else ""
        if argv[1] == "--help":
            return 0, " -s, --kexec-file-syscall Use file based syscall for kexec operation\n" if self.has_s else "", ""
        loaded = self.kho.kexec_loaded_path
        if argv[1:3] == ["-s", "-l"]:
            if self.load_rc:
                return self.load_rc, "", "kexec_file_load failed: Exec format error"
            with open(loaded, "w") as fh:
                fh.write("1\n")
            return 0, "", ""
        if argv[1] == "-u":
            with open(loaded, "w") as fh:
                fh.write("0\n")
            return 0, "", ""
        raise AssertionError(argv)


def params(tmp_path, **kw):
    kernel = tmp_path / "vmlinuz"
    kernel.write_bytes(BZIMAGE)
    return {"kernel": str(kernel), "initrd": None, "cmdline": None, "append": None, "ensure_kho": True,
            "finalize": False, "force": False, "method": "auto", "accept_loss": [], "drop_regions": [], "target_check": "refuse", "pmsg": None, **kw}


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


@pytest.fixture
def systemd(tmp_path, monkeypatch):
    """A host where systemd runs (its runtime directory), and the jump status under tmp_path."""
    (tmp_path / "systemd").mkdir()
    monkeypatch.setattr(paths, "SYSTEMD_RUNTIME", str(tmp_path / "systemd"))
    monkeypatch.setattr(paths, "JUMP_STATUS", str(tmp_path / "jump-status"))
    return tmp_path / "jump-status"


def test_executed_loads_writes_the_pstore_message_and_queues_the_jump_in_one_run(tmp_path, fixtures, monkeypatch,
                                                                                 systemd):
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
def test_executed_undoes_its_load_when_the_jump_cannot_be_queued(tmp_path, fixtures, systemd, queue_rc, pmsg_dir,
                                                                 message):
    kho = make_host(tmp_path, "live-cold")
    if not pmsg_dir:
        kho.devfs = str(tmp_path / "no-dev")
    mod = FakeModule(kho, queue_rc=queue_rc)
    kx = K.Kexec(mod, str(tmp_path / "run"))
    changes = K.Changes(K.jump_status.Writer(str(systemd), "run-1"))
    with pytest.raises(K.KexecError, match=message) as info:
        K.start_jump(mod, kho, kx, params(tmp_path, pmsg="canary-1"), changes)
    assert str(info.value).endswith("nothing was jumped: the image unloaded")
    assert kho.kexec_loaded() is False and kx.read_record() is None and mod.commands[-1][1:] == ["-u"]


def test_executed_in_check_mode_queues_nothing(tmp_path, fixtures, systemd):
    kho = make_host(tmp_path, "live-cold")
    mod = FakeModule(kho, check_mode=True)
    res = K.start_jump(mod, kho, K.Kexec(mod, str(tmp_path / "run")), params(tmp_path, pmsg="x"))
    assert res["triggered"] is False and not kho.kexec_loaded() and not systemd.exists()
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


def test_pstore_search_finds_what_is_there_within_its_bounds(tmp_path):
    from ansible_collections.kexec.kho.plugins.module_utils._kho import facts as FA
    (tmp_path / "fs").mkdir()
    (tmp_path / "fs" / "pmsg-ramoops-0").write_bytes(b"\0kexec-kho-canary-web-1-1795.5-42\n")
    archive = tmp_path / "archive" / "1795"
    archive.mkdir(parents=True)
    (archive / "pmsg-ramoops-0").write_text("kexec-kho-canary-old")
    dirs = [str(tmp_path / "fs"), str(tmp_path / "archive"), str(tmp_path / "absent")]
    assert FA.pstore_search(dirs, ["kexec-kho-canary-web-1-1795.5-42", "kexec-kho-canary-old", "never"]) == [
        "kexec-kho-canary-old", "kexec-kho-canary-web-1-1795.5-42"]
    assert FA.pstore_search(dirs, ["kexec-kho-canary-old"], max_files=1) in ([], ["kexec-kho-canary-old"])
    assert FA.pstore_search(dirs, ["canary-web-1"], max_bytes=4) == []  # read no further than the bound


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

"""The simulated host the state units share: a tree of one interface generation (simtree), a kernel whose out/finalize
writes as one finalize form does, and a module whose kexec, systemctl and systemd-run are faked at run_command."""

from __future__ import annotations

import errno

import kimage  # pylint: disable=import-error  # tests/
import pytest
import simtree  # pylint: disable=import-error  # tests/

from ansible_collections.kexec.kho.plugins.module_utils._kho import host as H
from ansible_collections.kexec.kho.plugins.module_utils._kho import kexec as K


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


@pytest.fixture(name="running")
def running_fixture(tmp_path):
    """The running kernel: a simulated live-cold host."""
    return H.from_params(simtree.build("live-cold", tmp_path / "host"))

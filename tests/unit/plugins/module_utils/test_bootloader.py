"""kho_cmdline's pieces: request validation, GRUB/kernel-install/grubby backends, nothing lost."""

from __future__ import annotations

import os
import stat

import pytest

from ansible_collections.kexec.kho.plugins.module_utils._kho import bootloader as B
from ansible_collections.kexec.kho.plugins.module_utils._kho import files
from ansible_collections.kexec.kho.plugins.module_utils._kho.cmdline import GrammarError, apply_kho, check_request, kho_signature

GRUB = """# If you change this file, run 'update-grub' afterwards
GRUB_DEFAULT=0
GRUB_TIMEOUT=5
GRUB_CMDLINE_LINUX_DEFAULT="quiet"
GRUB_CMDLINE_LINUX="console=ttyS0,115200 \\"acpi_osi=Windows 2020\\" $EXTRA"  # keep this comment
#GRUB_TERMINAL=console
"""


class FakeModule:
    def __init__(self, tmp_path, bins=(), fail=(), **params):
        self.params = {"backup": False, "regenerate": True, "grub_cfg": None, "bootloader": "auto",
                       "grub_file": str(tmp_path / "grub"), "kernel_cmdline_file": str(tmp_path / "kcmd"),
                       "grubby_kernel": "ALL", **params}
        self.bins, self.fail, self.commands = set(bins), set(fail), []
        self.outputs: dict = {}

    def get_bin_path(self, name):
        return f"/usr/sbin/{name}" if name in self.bins else None

    def run_command(self, argv):
        assert isinstance(argv, list)
        self.commands.append(argv)
        name = os.path.basename(argv[0])
        if name in self.fail:
            return 1, "", f"{name}: simulated failure"
        return 0, self.outputs.get(name, ""), ""


def test_request_validation_names_value_and_form():
    with pytest.raises(GrammarError, match="quote it: kho: 'on'"):
        check_request(kho=True)
    with pytest.raises(GrammarError, match="not a kernel boolean"):
        check_request(kho="maybe")
    with pytest.raises(GrammarError, match="three sizes LOWMEM,GLOBAL,PERNODE"):
        check_request(scratch="16M,512M")
    with pytest.raises(GrammarError, match=r"reserve_mem\[1\].label 'a' is used twice"):
        check_request(reserve_mem=[{"size": "1M", "align": 0, "label": "a"}] * 2)
    with pytest.raises(GrammarError, match="at most 8"):
        check_request(reserve_mem=[{"size": "1M", "align": 0, "label": f"r{i}"} for i in range(9)])
    with pytest.raises(GrammarError, match=r"reserve_mem\[0\].size '1Q' is not a size"):
        check_request(reserve_mem=[{"size": "1Q", "align": 0, "label": "a"}])
    with pytest.raises(GrammarError, match="YAML boolean"):
        check_request(reserve_mem=[{"size": True, "align": 0, "label": "a"}])
    ok = check_request(kho="y", scratch="50%", reserve_mem=[{"size": "1M", "align": 4096, "label": "oops"}])
    assert ok == {"kho": "y", "scratch": "50%", "reserve_mem": [{"size": "1M", "align": "4096", "label": "oops"}]}


def test_apply_kho_and_reboot_signature():
    line = "root=/dev/sda kho_bootmem=10% quiet"
    after = apply_kho(line, "present", "on", "20%", "auto", [{"size": "1M", "align": "4096", "label": "oops"}])
    assert after == "root=/dev/sda kho_bootmem=20% quiet kho=on reserve_mem=1M:4096:oops"
    forced = apply_kho(after, "present", None, "20%", "kho_scratch", None)
    assert "kho_bootmem" not in forced and "kho_scratch=20%" in forced
    assert apply_kho(after, "absent") == "root=/dev/sda quiet"
    assert kho_signature("kho=on reserve_mem=1M:0:a") == kho_signature("kho=1 reserve_mem=0x100000:64:a")
    assert kho_signature("kho=on") != kho_signature("kho=off")


def test_grub_edit_keeps_everything_else(tmp_path):
    mod = FakeModule(tmp_path, bins={"update-grub"})
    (tmp_path / "grub").write_text(GRUB)
    os.chmod(tmp_path / "grub", 0o640)
    grub = B.Grub(mod, str(tmp_path / "grub"), None)
    before = grub.read()
    assert before == 'console=ttyS0,115200 \\"acpi_osi=Windows 2020\\" $EXTRA'
    after = apply_kho(before, "present", "on", None, "auto", [{"size": "1M", "align": "4096", "label": "oops"}])
    res = grub.write(before, after)
    text = (tmp_path / "grub").read_text()
    assert text == GRUB.replace('$EXTRA"', '$EXTRA kho=on reserve_mem=1M:4096:oops"')
    assert stat.S_IMODE(os.stat(tmp_path / "grub").st_mode) == 0o640
    assert res["regenerated"] == [["/usr/sbin/update-grub"]]
    assert grub.read() == after


def test_grub_without_the_variable_and_single_quotes(tmp_path):
    mod = FakeModule(tmp_path, bins={"grub2-mkconfig"}, grub_cfg=str(tmp_path / "grub.cfg"))
    (tmp_path / "grub").write_text("GRUB_TIMEOUT=1")
    grub = B.Grub(mod, str(tmp_path / "grub"), str(tmp_path / "grub.cfg"))
    assert grub.read() == ""
    res = grub.write("", "kho=on")
    assert (tmp_path / "grub").read_text() == 'GRUB_TIMEOUT=1\nGRUB_CMDLINE_LINUX="kho=on"\n'
    assert res["regenerated"] == [["/usr/sbin/grub2-mkconfig", "-o", str(tmp_path / "grub.cfg")]]
    (tmp_path / "grub").write_text("GRUB_CMDLINE_LINUX='ro quiet'\n")
    grub.write("ro quiet", "ro quiet kho=on")
    assert (tmp_path / "grub").read_text() == "GRUB_CMDLINE_LINUX='ro quiet kho=on'\n"


def test_grub_unterminated_quote_is_an_error(tmp_path):
    (tmp_path / "grub").write_text('GRUB_CMDLINE_LINUX="ro\n')
    with pytest.raises(B.BootloaderError, match="unterminated"):
        B.Grub(FakeModule(tmp_path), str(tmp_path / "grub"), None).read()


def test_failed_regeneration_restores_the_file_byte_for_byte(tmp_path):
    mod = FakeModule(tmp_path, bins={"update-grub"}, fail={"update-grub"}, backup=True)
    (tmp_path / "grub").write_bytes(GRUB.encode())
    os.chmod(tmp_path / "grub", 0o600)
    grub = B.Grub(mod, str(tmp_path / "grub"), None)
    with pytest.raises(B.BootloaderError, match="restored as it was"):
        grub.write(grub.read(), "kho=on")
    assert (tmp_path / "grub").read_bytes() == GRUB.encode()
    (backup,) = [p for p in tmp_path.iterdir() if p.name.startswith("grub.") and p.name.endswith("~")]
    assert backup.read_bytes() == GRUB.encode()
    assert stat.S_IMODE(backup.stat().st_mode) == 0o600  # never more readable than the original
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".grub.")] == []  # no temp files left


def test_no_regeneration_tool_is_refused_before_writing(tmp_path):
    mod = FakeModule(tmp_path)
    (tmp_path / "grub").write_text(GRUB)
    with pytest.raises(B.BootloaderError, match="install GRUB's tools"):
        B.Grub(mod, str(tmp_path / "grub"), None).write("x", "y")


def test_kernel_install_backend(tmp_path, monkeypatch):
    mod = FakeModule(tmp_path, bins={"kernel-install"})
    ki = B.KernelInstall(mod, str(tmp_path / "kcmd"), "BOOT_IMAGE=/vmlinuz initrd=/x root=/dev/sda rw")
    assert ki.read() == "root=/dev/sda rw"  # no file yet: the running line, as kernel-install does
    monkeypatch.setattr(B.glob, "glob", lambda pattern: ["/usr/lib/modules/7.3.4/vmlinuz"])
    res = ki.write("root=/dev/sda rw", "root=/dev/sda rw kho=on")
    assert (tmp_path / "kcmd").read_text() == "root=/dev/sda rw kho=on\n"
    assert res["regenerated"] == [["/usr/sbin/kernel-install", "add", "7.3.4", "/usr/lib/modules/7.3.4/vmlinuz"]]


def test_kernel_install_failure_removes_a_file_it_created(tmp_path, monkeypatch):
    mod = FakeModule(tmp_path, bins={"kernel-install"}, fail={"kernel-install"})
    monkeypatch.setattr(B.glob, "glob", lambda pattern: ["/usr/lib/modules/7.3.4/vmlinuz"])
    with pytest.raises(B.BootloaderError):
        B.KernelInstall(mod, str(tmp_path / "kcmd"), "root=/dev/sda").write("root=/dev/sda", "root=/dev/sda kho=on")
    assert not (tmp_path / "kcmd").exists()


# Recorded from `grubby --info=ALL` on Fedora 41 (grubby 8.40): grubby is not packaged by Debian.
GRUBBY_INFO = """index=0
kernel="/boot/vmlinuz-6.12.5-200.fc41.x86_64"
args="ro rootflags=subvol=root rhgb quiet kho=off reserve_mem=2M:4096:old"
root="UUID=2c1b9c5a-8d3e-4d0a-9b39-6d1c2f0e3a11"
initrd="/boot/initramfs-6.12.5-200.fc41.x86_64.img"
title="Fedora Linux (6.12.5-200.fc41.x86_64) 41 (Forty One)"
id="a1b2c3d4e5f6-6.12.5-200.fc41.x86_64"
"""


def test_grubby_backend(tmp_path):
    mod = FakeModule(tmp_path, bins={"grubby"})
    mod.outputs["grubby"] = GRUBBY_INFO
    backend = B.select(mod, "")
    assert backend.name == "grubby"
    before = backend.read()
    assert before == "ro rootflags=subvol=root rhgb quiet kho=off reserve_mem=2M:4096:old"
    after = apply_kho(before, "present", "on", None, "auto", [{"size": "1M", "align": "4096", "label": "oops"}])
    mod.commands.clear()
    backend.write(before, after)
    assert mod.commands == [
        ["/usr/sbin/grubby", "--update-kernel=ALL", "--remove-args=kho reserve_mem"],
        ["/usr/sbin/grubby", "--update-kernel=ALL", "--args=kho=on reserve_mem=1M:4096:oops"],
    ]


def test_select_prefers_what_exists(tmp_path):
    (tmp_path / "grub").write_text("")
    assert B.select(FakeModule(tmp_path), "").name == "grub"
    (tmp_path / "kcmd").write_text("ro\n")
    assert B.select(FakeModule(tmp_path), "").name == "kernel-install"
    with pytest.raises(B.BootloaderError, match="no boot loader configuration"):
        B.select(FakeModule(tmp_path / "nowhere"), "")
    with pytest.raises(B.BootloaderError, match="grubby is not installed"):
        B.select(FakeModule(tmp_path, bootloader="grubby"), "")


def test_write_atomic_keeps_owner_and_mode(tmp_path):
    target = tmp_path / "f"
    target.write_text("old")
    os.chmod(target, 0o604)
    if os.geteuid() == 0:
        os.chown(target, 1234, 5678)
    files.write_atomic(str(target), b"new")
    st = target.stat()
    assert target.read_text() == "new" and stat.S_IMODE(st.st_mode) == 0o604
    if os.geteuid() == 0:
        assert (st.st_uid, st.st_gid) == (1234, 5678)

"""The way back recorded before the jump (module_utils/_kho/way_back.py, #36): the running kernel's image and initrd
on disk, its command line and release, and a refusal saying why where no return can be promised.  Simulated trees;
kho_kexec's run on the host (start_jump) carries the record."""

from __future__ import annotations

import pytest
from fakehost import FakeModule, make_host, params, state_dir_default  # noqa: F401  pylint: disable=import-error,unused-import

from ansible_collections.kexec.kho.plugins.module_utils._kho import host as H
from ansible_collections.kexec.kho.plugins.module_utils._kho import jump_status, paths, way_back
from ansible_collections.kexec.kho.plugins.module_utils._kho import kexec as K

RUNNING = "BOOT_IMAGE=/boot/vmlinuz-7.3.4 root=/dev/vda rw console=ttyS0 kho=on reserve_mem=4M:2M:trace"
LINE = "root=/dev/vda rw console=ttyS0 kho=on reserve_mem=4M:2M:trace"
BUILT_IN = ["ext4", "virtio_blk"]  # the root's drivers, as boot_files.root_drivers would tell them


def tree(root, *names: str) -> str:
    for rel in names:
        p = root / rel.lstrip("/")
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_text("")
    return str(root)


def plan(root: str, release="7.3.4", running=RUNNING, drivers=None):
    return way_back.plan(release, running, H.boot_images(release, root), root, drivers or BUILT_IN)


def test_the_running_kernel_on_disk_is_the_way_back_with_its_initrd_and_line(tmp_path):
    root = tree(tmp_path, "/boot/vmlinuz-7.3.4", "/boot/initrd.img-7.3.4")
    rec = plan(root)
    assert rec == {"possible": True, "kernel": "/boot/vmlinuz-7.3.4", "initrd": "/boot/initrd.img-7.3.4",
                   "cmdline": LINE, "release": "7.3.4",
                   "why": "the running kernel 7.3.4 is on disk: /boot/vmlinuz-7.3.4 with /boot/initrd.img-7.3.4"}
    assert list(rec) == list(way_back.FIELDS)


@pytest.mark.parametrize(("files", "kernel", "initrd"), [
    (("/boot/vmlinuz-7.3.4", "/boot/initramfs-7.3.4.img"), "/boot/vmlinuz-7.3.4", "/boot/initramfs-7.3.4.img"),  # EL
    (("/usr/lib/modules/7.3.4/vmlinuz", "/usr/lib/modules/7.3.4/initrd"), "/usr/lib/modules/7.3.4/vmlinuz",
     "/usr/lib/modules/7.3.4/initrd"),  # kernel-install
])
def test_each_layout_is_found_as_for_any_target(tmp_path, files, kernel, initrd):
    rec = plan(tree(tmp_path, *files))
    assert (rec["possible"], rec["kernel"], rec["initrd"]) == (True, kernel, initrd)


def test_a_kernel_without_modules_needs_no_initrd_and_says_so(tmp_path):
    rec = plan(tree(tmp_path, "/boot/vmlinuz-7.3.4"))
    assert rec["possible"] is True and rec["initrd"] is None
    assert rec["why"].endswith("without an initrd (none needed: no initrd found, and the target has no module tree)")


def test_no_image_of_the_running_release_refuses_a_return_naming_where_it_looked(tmp_path):
    rec = plan(tree(tmp_path, "/boot/vmlinuz-7.2.13"))
    assert rec["possible"] is False and rec["kernel"] is None and rec["release"] == "7.3.4" and rec["cmdline"] == LINE
    assert "the running kernel 7.3.4 is not on disk" in rec["why"]
    assert "/boot/vmlinuz-7.3.4" in rec["why"] and "/usr/lib/modules/7.3.4/vmlinuz" in rec["why"]


def test_only_the_vmlinuz_link_is_no_way_back_unless_it_names_this_release(tmp_path):
    tree(tmp_path, "/boot/vmlinuz-7.4.1")
    (tmp_path / "vmlinuz").symlink_to("boot/vmlinuz-7.4.1")  # the newest installed, not the one running
    rec = plan(str(tmp_path))
    assert rec["possible"] is False and rec["kernel"] == "/vmlinuz"
    assert "names the newest kernel installed, not necessarily the running 7.3.4" in rec["why"]


def test_a_modular_build_without_its_initrd_is_no_way_back(tmp_path):
    root = tree(tmp_path, "/boot/vmlinuz-7.3.4", "/usr/lib/modules/7.3.4/modules.dep")
    (tmp_path / "usr/lib/modules/7.3.4/modules.builtin").write_text("kernel/fs/ext4/ext4.ko\n")
    rec = plan(root)  # virtio_blk is a module: the root could not be mounted without the initramfs
    assert rec["possible"] is False and rec["kernel"] == "/boot/vmlinuz-7.3.4" and rec["initrd"] is None
    assert rec["why"].startswith("the way back to 7.3.4 would have no initrd: no initrd for /boot/vmlinuz-7.3.4")
    assert "/boot/initrd.img-7.3.4" in rec["why"] and "does not build in virtio_blk" in rec["why"]


def test_an_unknown_release_promises_nothing(tmp_path):
    rec = way_back.plan(None, RUNNING, H.boot_images(None, str(tmp_path)), str(tmp_path), BUILT_IN)
    assert rec["possible"] is False and "the running release is unknown" in rec["why"]


@pytest.mark.parametrize(("running", "line"), [
    (RUNNING, LINE),
    ("root=/dev/vda BOOT_IMAGE=(hd0,gpt2)/vmlinuz-7.3.4 quiet\n", "root=/dev/vda quiet"),
    ("", ""),
])
def test_the_line_is_the_running_one_less_boot_image(running, line):
    assert way_back.return_cmdline(running) == line


def test_the_read_on_the_host_takes_the_running_release_and_line(tmp_path):
    kho = make_host(tmp_path, "live-cold")  # release 7.3.4, the recorded 7.3.4 line
    root = tree(tmp_path / "root", "/boot/vmlinuz-7.3.4", "/boot/initrd.img-7.3.4")
    rec = way_back.read(kho, root, BUILT_IN)
    assert rec["possible"] is True and rec["release"] == "7.3.4" and rec["cmdline"] == kho.cmdline()


def test_a_read_that_breaks_is_no_way_back_never_a_failed_jump(tmp_path, monkeypatch):
    kho = make_host(tmp_path, "live-cold")

    def broken(*_a):
        raise UnicodeDecodeError("utf-8", b"\xff", 0, 1, "odd")
    monkeypatch.setattr(way_back.host, "boot_images", broken)
    rec = way_back.read(kho, str(tmp_path))
    assert rec["possible"] is False and rec["why"].startswith("the way back could not be read: UnicodeDecodeError")


def test_the_run_that_loads_and_queues_the_jump_records_the_way_back_first(tmp_path, fixtures, monkeypatch):
    """kho_kexec state=executed's run on the host: its answer carries way_back, read before the jump is queued (also
    in check mode, where nothing is queued)."""
    (tmp_path / "systemd").mkdir()
    monkeypatch.setattr(paths, "SYSTEMD_RUNNING", str(tmp_path / "systemd"))
    root = tree(tmp_path / "root", "/boot/vmlinuz-7.3.4", "/boot/initrd.img-7.3.4")
    real = way_back.read
    seen = []

    def read(kho):
        seen.append(kho.kexec_loaded())  # the load is done, the jump not yet queued
        return real(kho, root, BUILT_IN)
    monkeypatch.setattr(K.way_back, "read", read)
    kho = make_host(tmp_path, "live-cold")
    mod = FakeModule(kho)
    status = jump_status.Writer(str(tmp_path / "jump-status"), "run-1")
    res = K.start_jump(mod, kho, K.Kexec(mod, str(tmp_path / "run")), params(tmp_path), K.Changes(status))
    assert res["triggered"] is True and seen == [True]
    assert res["way_back"]["possible"] is True and res["way_back"]["kernel"] == "/boot/vmlinuz-7.3.4"
    dry = FakeModule(make_host(tmp_path / "dry", "live-cold"), check_mode=True)
    res = K.start_jump(dry, dry.kho, K.Kexec(dry, str(tmp_path / "dry-run")), params(tmp_path))
    assert res["triggered"] is False and res["way_back"]["release"] == "7.3.4"

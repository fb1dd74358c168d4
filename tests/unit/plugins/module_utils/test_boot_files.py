"""The target's initrd, per distribution layout, and the refusal of a modular target without one (#35)."""

from __future__ import annotations

import pytest

from ansible_collections.kexec.kho.plugins.module_utils._kho import boot_files


def tree(root, files: dict):
    for rel, text in files.items():
        p = root / rel.lstrip("/")
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_text(text)
    return str(root)


MODULAR = {"/usr/lib/modules/7.2.13-pkg/modules.dep": "",
           "/usr/lib/modules/7.2.13-pkg/modules.builtin": "kernel/drivers/virtio/virtio_pci.ko\n"}


@pytest.mark.parametrize(("kernel", "files", "expected"), [
    ("/boot/vmlinuz-7.2.13-pkg", {"/boot/initrd.img-7.2.13-pkg": ""}, "/boot/initrd.img-7.2.13-pkg"),  # Debian
    ("/boot/vmlinuz-6.12.0-55.el10.x86_64", {"/boot/initramfs-6.12.0-55.el10.x86_64.img": ""},
     "/boot/initramfs-6.12.0-55.el10.x86_64.img"),  # EL, dracut
    ("/usr/lib/modules/7.3.5/vmlinuz", {"/usr/lib/modules/7.3.5/initrd": ""}, "/usr/lib/modules/7.3.5/initrd"),
    # an image copied under another name: found by the release its header says
    ("/srv/kernels/next.bzImage", {"/boot/initrd.img-7.3.5": ""}, "/boot/initrd.img-7.3.5"),
    # a BLS entry names the pair
    ("/boot/f00/7.3.5/linux", {"/boot/loader/entries/f00-7.3.5.conf": "title x\nlinux /f00/7.3.5/linux\n"
                                                                      "initrd /f00/7.3.5/initrd\n",
                               "/boot/f00/7.3.5/initrd": ""}, "/boot/f00/7.3.5/initrd"),
])
def test_the_initrd_of_each_layout_is_found(tmp_path, kernel, files, expected):
    root = tree(tmp_path, {kernel: "", **files})
    assert boot_files.resolve(kernel, None, "7.3.5" if "7.3.5" in str(files) or "srv" in kernel else None, root,
                              drivers=["ext4", "virtio_blk"])[0] == expected


def test_a_modular_target_without_its_initrd_is_refused_naming_the_files(tmp_path):
    root = tree(tmp_path, {"/boot/vmlinuz-7.2.13-pkg": "", **MODULAR})
    with pytest.raises(ValueError) as err:
        boot_files.resolve("/boot/vmlinuz-7.2.13-pkg", None, "7.2.13-pkg", root, drivers=["ext4", "virtio_blk"])
    msg = str(err.value)
    assert "/boot/initrd.img-7.2.13-pkg" in msg and "/boot/initramfs-7.2.13-pkg.img" in msg
    assert "does not build in ext4, virtio_blk" in msg and "initrd: none" in msg


def test_roots_drivers_unknown_on_a_modular_target_need_an_initrd(tmp_path):
    root = tree(tmp_path, {"/boot/vmlinuz-7.2.13-pkg": "", **MODULAR})
    assert boot_files.root_drivers(root) is None  # no mounts file in this tree: the root's drivers are unknown
    with pytest.raises(ValueError, match="cannot be told"):
        boot_files.resolve("/boot/vmlinuz-7.2.13-pkg", None, "7.2.13-pkg", root)


def test_built_in_drivers_or_no_module_tree_need_none(tmp_path):
    root = tree(tmp_path, {"/boot/vmlinuz-7.3.4": "", "/boot/vmlinuz-7.2.13-pkg": "",
                           "/usr/lib/modules/7.2.13-pkg/modules.dep": "",
                           "/usr/lib/modules/7.2.13-pkg/modules.builtin": ("kernel/fs/ext4/ext4.ko\n"
                                                                           "kernel/drivers/block/virtio_blk.ko\n")})
    initrd, how = boot_files.resolve("/boot/vmlinuz-7.3.4", None, "7.3.4", root, drivers=["ext4", "virtio_blk"])
    assert initrd is None and "no module tree" in how  # the lab's kernel: everything built in
    initrd, how = boot_files.resolve("/boot/vmlinuz-7.2.13-pkg", None, "7.2.13-pkg", root, drivers=["ext4", "virtio_blk"])
    assert initrd is None and "builds in the root's drivers" in how


def test_what_the_user_says_wins(tmp_path):
    root = tree(tmp_path, {"/boot/vmlinuz-7.2.13-pkg": "", "/boot/initrd.img-7.2.13-pkg": "", **MODULAR})
    assert boot_files.resolve("/boot/vmlinuz-7.2.13-pkg", "none", "7.2.13-pkg", root)[0] is None
    assert boot_files.resolve("/boot/vmlinuz-7.2.13-pkg", "/srv/my.img", "7.2.13-pkg", root)[0] == "/srv/my.img"


def test_a_release_that_is_no_path_word_is_not_looked_up(tmp_path):
    root = tree(tmp_path, {"/boot/initrd.img-x": ""})
    assert boot_files.candidates("/boot/bzImage", "../../etc/x", root) == []
    assert boot_files.modules_dir("../../etc", root) is None


def test_the_images_name_gives_the_release_where_the_image_does_not(tmp_path):
    assert boot_files.named_release("/boot/vmlinuz-7.2.13-pkg") == "7.2.13-pkg"
    assert boot_files.named_release("/usr/lib/modules/7.3.4/vmlinuz") == "7.3.4"
    assert boot_files.named_release("/boot/vmlinuz-kho;reboot") is None
    root = tree(tmp_path, {"/boot/vmlinuz-7.2.13-pkg": "", "/usr/lib/modules/7.2.13-pkg/modules.dep": ""})
    with pytest.raises(ValueError, match="initrd.img-7.2.13-pkg"):
        boot_files.resolve("/boot/vmlinuz-7.2.13-pkg", None, None, root, drivers=["ext4", "virtio_blk"])

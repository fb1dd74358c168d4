"""The guests' disks: the root file system (debootstrap, per flavour), the guest's file tree staged from it, the
whole-disk image QEMU boots with -kernel, and the partitioned disk a real GRUB boots.  build() is what `build`
and `up` ask for: the kernel and the disk, made or found under the build lock."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import time
from pathlib import Path

from lab_build import build_kernel, kernel_dir
from lab_common import (BUILD_LOCK, CACHE, DISK_RECIPE, GRUB_RECIPE, GUEST_CMDLINE, GUEST_KERNEL, MIRROR,
                        ROOTFS_RECIPE, digest, locked, log, run, ssh_key)
from lab_flavours import FLAVOURS, guest_files

GRUB_MODULES = Path("/usr/lib/grub/i386-pc")


def build_rootfs(flavour: str = "bookworm") -> Path:
    suite, packages = FLAVOURS[flavour]["suite"], FLAVOURS[flavour]["packages"]
    tree = CACHE / f"rootfs-{digest(suite, *packages, ROOTFS_RECIPE)}"
    if (tree / "etc/os-release").exists():
        log(f"root fs cached: {tree}")
        return tree
    tmp = tree.with_name(tree.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    log(f"debootstrap {suite} into {tmp} (about 2 minutes)")
    started = time.monotonic()
    run(["debootstrap", "--variant=minbase", f"--include={','.join(packages)}",
         suite, str(tmp), MIRROR], stdout=subprocess.DEVNULL)
    for junk in ("var/cache/apt/archives", "var/lib/apt/lists"):
        for f in (tmp / junk).glob("*"):
            if f.is_file():
                f.unlink()
    tmp.rename(tree)
    log(f"root fs ready in {round(time.monotonic() - started, 1)} s")
    return tree


def _stage(kernel: Path, tree: Path, pub: str, extra: dict | None = None) -> Path:
    """The guest's file tree: the root fs, the lab's files, and ``extra`` (relative path: (content, mode))."""
    stage = CACHE / "stage.tmp"
    shutil.rmtree(stage, ignore_errors=True)
    run(["cp", "-a", "--reflink=auto", str(tree), str(stage)])
    if not (stage / "home/lab").exists():
        run(["chroot", str(stage), "useradd", "-m", "-s", "/bin/bash", "lab"])
    for rel, (content, mode) in {**guest_files(kernel, pub), **(extra or {})}.items():
        p = stage / rel
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_bytes(content if isinstance(content, bytes) else content.encode())
        p.chmod(mode)
    lab_ids = (stage / "etc/passwd").read_text().split("\nlab:")[1].split(":")[1:3]
    for p in [stage / "home/lab", *(stage / "home/lab").rglob("*")]:
        os.chown(p, int(lab_ids[0]), int(lab_ids[1]))
    (stage / "root/.ssh").chmod(0o700)
    (stage / "home/lab/.ssh").chmod(0o700)
    vml = stage / "vmlinuz"
    if vml.is_symlink() or vml.exists():
        vml.unlink()
    vml.symlink_to(GUEST_KERNEL.lstrip("/"))
    wants = stage / "etc/systemd/system/multi-user.target.wants"
    wants.mkdir(parents=True, exist_ok=True)
    link = wants / "systemd-networkd.service"
    if not link.exists():
        link.symlink_to("/lib/systemd/system/systemd-networkd.service")
    for unit in ("e2scrub_reap.service", "e2scrub_all.timer"):  # slow under TCG, no use in a lab
        masked = stage / "etc/systemd/system" / unit
        if not masked.is_symlink():
            masked.symlink_to("/dev/null")
    (stage / "etc/machine-id").write_text("")
    return stage


def _inputs(flavour: str = "bookworm") -> tuple[Path, Path, str]:
    kdir = build_kernel()
    tree = build_rootfs(flavour)
    return kdir, tree, ssh_key().with_suffix(".pub").read_text()


def build_disk(flavour: str = "bookworm") -> Path:
    """A whole-disk ext4 file system (root=/dev/vda), booted by QEMU's -kernel."""
    kdir, tree, pub = _inputs(flavour)
    spec = FLAVOURS[flavour]
    parts = [] if flavour == "bookworm" else [flavour, json.dumps(spec["files"]), *spec["enable"]]
    disk = CACHE / f"disk-{digest(kdir.name, tree.name, pub, DISK_RECIPE, *parts)}.img"
    if disk.exists():
        log(f"disk cached: {disk}")
        return disk
    log(f"assembling the guest disk image ({flavour})")
    stage = _stage(kdir / "bzImage", tree, pub, spec["files"])
    for unit in spec["enable"]:
        (stage / "etc/systemd/system/multi-user.target.wants" / unit).symlink_to(f"/etc/systemd/system/{unit}")
    tmp = disk.with_suffix(".tmp")
    run(["mkfs.ext4", "-q", "-F", "-L", "kho-lab", "-d", str(stage), str(tmp), "2G"])
    tmp.chmod(0o600)  # it holds the guests' SSH host keys
    tmp.rename(disk)
    shutil.rmtree(stage)
    return disk


GRUB_DEFAULTS = f"""\
# kexec.kho lab: booted by this GRUB from the disk's MBR; KHO is off until kho_cmdline turns it on.
GRUB_DEFAULT=0
GRUB_TIMEOUT=0
GRUB_DISTRIBUTOR=kho-lab
GRUB_CMDLINE_LINUX_DEFAULT=""
GRUB_CMDLINE_LINUX="{GUEST_CMDLINE}"
GRUB_DISABLE_LINUX_UUID=true
GRUB_DISABLE_RECOVERY=true
GRUB_DISABLE_OS_PROBER=true
"""
# Until update-grub first runs in the guest: what its 10_linux would write, by hand.
GRUB_CFG = f"""\
set default=0
set timeout=0
menuentry 'kho-lab' {{
  insmod part_msdos
  insmod ext2
  set root=(hd0,msdos1)
  linux {GUEST_KERNEL} root=/dev/vda1 ro {GUEST_CMDLINE}
}}
"""


def mbr(part_start: int, part_sectors: int) -> bytes:
    """One bootable Linux partition in a DOS partition table (LBA only; CHS fields say 'use LBA')."""
    entry = bytes([0x80, 0xFE, 0xFF, 0xFF, 0x83, 0xFE, 0xFF, 0xFF]) + part_start.to_bytes(4, "little") \
        + part_sectors.to_bytes(4, "little")
    return entry + bytes(48) + b"\x55\xaa"


def build_grub_disk() -> Path:
    """A partitioned disk with GRUB (i386-pc) in its MBR and gap: the guest boots from its own
    /boot/grub/grub.cfg, so kho_cmdline's edit and update-grub decide the next boot's command line."""
    kdir, tree, pub = _inputs()
    grub_version = subprocess.run(["grub-mkimage", "--version"], capture_output=True, text=True,
                                  check=True).stdout.strip()
    disk = CACHE / f"disk-grub-{digest(kdir.name, tree.name, pub, DISK_RECIPE, GRUB_RECIPE, grub_version)}.img"
    if disk.exists():
        log(f"GRUB disk cached: {disk}")
        return disk
    log("assembling the GRUB-booted disk image")
    extra = {
        "etc/fstab": ("/dev/vda1 / ext4 rw,errors=remount-ro 0 1\n"
                      "debugfs /sys/kernel/debug debugfs defaults 0 0\n", 0o644),
        "etc/default/grub": (GRUB_DEFAULTS, 0o644),
        "boot/grub/grub.cfg": (GRUB_CFG, 0o444),
    }
    for mod in GRUB_MODULES.iterdir():  # what grub-install would copy: modules and their lists
        if mod.suffix in (".mod", ".lst"):
            extra[f"boot/grub/i386-pc/{mod.name}"] = (mod.read_bytes(), 0o644)
    stage = _stage(kdir / "bzImage", tree, pub, extra)
    part = CACHE / "part.tmp"
    run(["mkfs.ext4", "-q", "-F", "-L", "kho-lab", "-d", str(stage), str(part), "2G"])
    shutil.rmtree(stage)
    core = CACHE / "core.img.tmp"
    run(["grub-mkimage", "-O", "i386-pc", "-d", str(GRUB_MODULES), "-o", str(core),
         "-p", "(hd0,msdos1)/boot/grub", "biosdisk", "part_msdos", "ext2"])
    start = 2048  # 1 MiB: the gap after the MBR holds core.img
    if core.stat().st_size > (start - 1) * 512:
        raise SystemExit(f"core.img is {core.stat().st_size} bytes, more than the gap holds")
    tmp = disk.with_suffix(".tmp")
    size = part.stat().st_size
    with open(tmp, "wb") as out:
        out.write((GRUB_MODULES / "boot.img").read_bytes()[:440] + bytes(6) + mbr(start, size // 512))
        out.write(core.read_bytes())
        out.truncate(start * 512 + size)
    run(["dd", f"if={part}", f"of={tmp}", "bs=4M", f"seek={start * 512}", "oflag=seek_bytes",
         "conv=sparse,notrunc", "status=none"])
    part.unlink()
    core.unlink()
    tmp.chmod(0o600)
    tmp.rename(disk)
    return disk


def build(_args=None, flavour: str = "bookworm") -> dict:
    CACHE.mkdir(mode=0o700, parents=True, exist_ok=True)
    CACHE.chmod(0o700)  # root file systems, disks and the lab's SSH key
    with locked(BUILD_LOCK):  # two builds in one tree corrupt it: the second one waits
        disk = build_disk(flavour)
    kdir = kernel_dir()
    info = json.loads((kdir / "build.json").read_text())
    return {"disk": str(disk), "kernel": str(kdir / "bzImage"), **info}

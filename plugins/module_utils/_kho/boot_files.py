# Copyright (c) kexec.kho contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
"""The initrd that belongs to a target kernel, and whether that kernel can boot without one.  Not a public API.

A distribution kernel keeps its disk and root file system drivers in modules (/usr/lib/modules/REL): without the
initramfs its package made at install it cannot mount root, and a host jumped into it is gone.  The initrd is found
where the distributions put it beside the image (Debian's initrd.img-REL, EL's and dracut's initramfs-REL.img,
kernel-install's /usr/lib/modules/REL/initrd, a BLS entry's `initrd` line); the root's drivers are read from the
running system (the root's file system type, the driver of its disk) and looked up in the target's modules.builtin.
"""

from __future__ import annotations

import os
import re

from ansible_collections.kexec.kho.plugins.module_utils._kho import paths

NONE = "none"  # initrd: none, said explicitly: load without an initrd, whatever the target has
MODULE_DIRS = ("/usr/lib/modules", "/lib/modules")
MAX_FILE = 4 << 20  # bytes of a modules.builtin, a BLS entry or a mounts file read, at most
MAX_ENTRIES = 256  # BLS entries looked at, at most
SAFE = re.compile(r"[A-Za-z0-9._+~:@-]{1,128}")  # a release as it may appear in a path


def _path(root: str, path: str) -> str:
    return os.path.join(root, path.lstrip("/"))


def _read(root: str, path: str) -> str | None:
    try:
        with open(_path(root, path), "rb") as fh:
            return fh.read(MAX_FILE).decode("utf-8", "replace")
    except OSError:
        return None


def _beside(kernel: str) -> list:
    """The initrds named after the image itself: DIR/vmlinuz-REL -> DIR/initrd.img-REL, DIR/initramfs-REL.img."""
    head, name = os.path.split(kernel)
    if name == "vmlinuz":  # kernel-install: /usr/lib/modules/REL/vmlinuz
        return [os.path.join(head, "initrd")]
    if name.startswith("vmlinuz-") and SAFE.fullmatch(name[len("vmlinuz-"):]):
        rel = name[len("vmlinuz-"):]
        return [os.path.join(head, f"initrd.img-{rel}"), os.path.join(head, f"initramfs-{rel}.img")]
    return []


def _by_release(release: str | None) -> list:
    if not release or not SAFE.fullmatch(release):
        return []
    return [initrd.format(release=release) for layout, _k, initrd in paths.BOOT_IMAGES if layout != "symlink"]


def _bls(kernel: str, root: str) -> list:
    """The `initrd` lines of the BLS entries whose `linux` line is this image (paths relative to /boot)."""
    found = []
    try:
        names = sorted(os.listdir(_path(root, paths.BLS_ENTRIES)))[:MAX_ENTRIES]
    except OSError:
        return found
    for name in (n for n in names if n.endswith(".conf")):
        keys: dict = {}
        for line in (_read(root, f"{paths.BLS_ENTRIES}/{name}") or "").splitlines():
            key, _sep, value = line.strip().partition(" ")
            keys.setdefault(key, []).append(value.strip())
        linux = [os.path.join(paths.BOOT, v.lstrip("/")) for v in keys.get("linux", [])]
        if kernel in linux or kernel in keys.get("linux", []):
            found += [os.path.join(paths.BOOT, v.lstrip("/")) for v in keys.get("initrd", [])]
    return found


def candidates(kernel: str, release: str | None, root: str = "/") -> list:
    """Every path an initrd of this image may have, in the order looked for, without repeats."""
    seen: list = []
    for path in [*_beside(kernel), *_by_release(release), *_bls(kernel, root)]:
        if path not in seen:
            seen.append(path)
    return seen


def find_initrd(kernel: str, release: str | None, root: str = "/") -> tuple:
    """(the target's initrd or None, every path looked at)."""
    looked = candidates(kernel, release, root)
    return next((p for p in looked if os.path.isfile(_path(root, p))), None), looked


def modules_dir(release: str | None, root: str = "/") -> str | None:
    """The target's module tree (/usr/lib/modules/REL with its modules.dep), or None: a kernel without modules."""
    if not release or not SAFE.fullmatch(release):
        return None
    return next((f"{d}/{release}" for d in MODULE_DIRS if os.path.isfile(_path(root, f"{d}/{release}/modules.dep"))),
                None)


def root_drivers(root: str = "/", procfs: str = paths.PROCFS, sysfs: str = paths.SYSFS) -> list | None:
    """The drivers the running root needs, as module names (its file system, its disk's driver); None where they
    cannot be told (a root on device-mapper, md, the network: an initrd is then needed whatever the image has)."""
    mounts = _read(root, f"{procfs}/self/mounts") or ""
    fstype = next((f[2] for f in (line.split() for line in mounts.splitlines()) if len(f) > 2 and f[1] == "/"), None)
    try:
        dev = os.stat(root).st_dev
    except OSError:
        return None
    block = _path(root, f"{sysfs}/dev/block/{os.major(dev)}:{os.minor(dev)}")
    driver = None
    for link in ("device/driver", "../device/driver"):  # a disk, or a partition of one
        target = os.path.join(block, link)
        if os.path.islink(target):
            driver = os.path.basename(os.readlink(target))
            break
    if not fstype or not driver:
        return None
    return [fstype.replace("-", "_"), driver.replace("-", "_")]


def builtin(release: str, root: str = "/") -> set | None:
    """The module names built into the target (modules.builtin), or None where its module tree lacks the list."""
    tree = modules_dir(release, root)
    text = _read(root, f"{tree}/modules.builtin") if tree else None
    if text is None:
        return None
    return {os.path.basename(line.strip())[:-3].replace("-", "_") for line in text.splitlines()
            if line.strip().endswith(".ko")}


def needs_initrd(release: str | None, root: str = "/", drivers=None) -> str | None:
    """Why this target cannot mount the root without an initrd, or None (no module tree: built-in drivers)."""
    tree = modules_dir(release, root)
    if tree is None:
        return None
    wanted = root_drivers(root) if drivers is None else drivers
    if wanted is None:
        return f"the target has modules ({tree}) and the drivers of this root cannot be told"
    have = builtin(release, root) or set()
    missing = [d for d in wanted if d not in have]
    if missing:
        return f"the target has modules ({tree}) and does not build in {', '.join(missing)}, which this root needs"
    return None


def named_release(kernel: str) -> str | None:
    """The release an image's name says (DIR/vmlinuz-REL, /usr/lib/modules/REL/vmlinuz), or None."""
    head, name = os.path.split(kernel)
    rel = name[len("vmlinuz-"):] if name.startswith("vmlinuz-") else os.path.basename(head) if name == "vmlinuz" else ""
    return rel if SAFE.fullmatch(rel) else None


def resolve(kernel: str, initrd: str | None, release: str | None, root: str = "/", drivers=None) -> tuple:
    """(the initrd to load or None, how it was decided); raises ValueError naming what was looked for where the
    target needs an initrd and none is found.  ``initrd``: the user's (a path, NONE, or None to look);
    ``release``: the image's own (image.inspect), else the one its name says."""
    release = release or named_release(kernel)
    if initrd == NONE:
        return None, "none, as asked (initrd: none)"
    if initrd:
        return initrd, "given"
    found, looked = find_initrd(kernel, release, root)
    if found:
        return found, "found beside the target"
    why = needs_initrd(release, root, drivers)
    if why:
        where = ", ".join(looked) or "nothing: the release is unknown"
        raise ValueError(f"no initrd for {kernel} (release {release or 'unknown'}): looked for {where}; {why}, "
                         "so without its initramfs the new kernel could not mount the root and the host would be lost. "
                         "Give initrd: PATH (kho_handover_initrd), or initrd: none if the image boots without one")
    if modules_dir(release, root) is None:
        return None, "none needed: no initrd found, and the target has no module tree"
    return None, "none needed: the target builds in the root's drivers"

# Copyright (c) kexec.kho contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
"""The way back, recorded before the jump: the running kernel as it could be loaded again.  Not a public API.

After the jump the old kernel is only what is on disk: its image and initrd found as for any target
(host.boot_images, then boot_files.resolve), the command line it booted with (less the boot loader's BOOT_IMAGE) and
its release.  Where the image is missing, or its modular build has no initrd, no return is promised, and the record
says why (docs/way-back.md).
"""

from __future__ import annotations

import os

from ansible_collections.kexec.kho.plugins.module_utils._kho import boot_files, host, paths
from ansible_collections.kexec.kho.plugins.module_utils._kho.cmdline import Cmdline

FIELDS = ("possible", "kernel", "initrd", "cmdline", "release", "why")
ON_FAILURE, NEVER = "on_failure", "never"
POLICIES = (ON_FAILURE, NEVER)  # kho_kexec's return option, the role's kho_handover_return: when to hand a host back


def return_cmdline(running: str) -> str:
    """The line the old kernel booted with, as a load gives it back: BOOT_IMAGE= is the boot loader's, not the
    kernel's (kexec --reuse-cmdline drops it too)."""
    line = Cmdline(running or "")
    line.remove("BOOT_IMAGE")
    return str(line).strip()


def _path(root: str, path: str) -> str:
    return os.path.join(root, path.lstrip("/"))


def _named(root: str, link: str) -> str | None:
    """The release a link such as /vmlinuz names, by the image it points at (vmlinuz-REL)."""
    real, top = os.path.realpath(_path(root, link)), os.path.realpath(root).rstrip("/")
    return boot_files.named_release(real[len(top):] if real.startswith(top + "/") else real)


def _refused(release, cmdline, why: str, kernel=None, initrd=None) -> dict:
    return dict(zip(FIELDS, (False, kernel, initrd, cmdline, release, why)))


def plan(release: str | None, running: str, images: dict, root: str = "/", drivers=None) -> dict:
    """The way back from what was read: ``images`` is host.boot_images' answer for ``release``, ``running`` the
    running command line.  Never raises: a way back that cannot be promised is a record saying why."""
    cmdline = return_cmdline(running)
    if not release:
        return _refused(release, cmdline, "the running release is unknown (/proc/sys/kernel/osrelease unreadable): "
                                          "no image on disk can be told to be this kernel")
    kernel = images.get("kernel")
    if not kernel:
        looked = ", ".join(k.format(release=release) for _l, k, _i in paths.BOOT_IMAGES)
        return _refused(release, cmdline, f"the running kernel {release} is not on disk (looked for {looked}): after "
                                          "the jump nothing could load it again")
    if images.get("layout") == "symlink" and _named(root, kernel) != release:
        return _refused(release, cmdline, f"only {kernel} is on disk, which names the newest kernel installed, not "
                                          f"necessarily the running {release}: no image of it to return to", kernel)
    if not os.access(_path(root, kernel), os.R_OK):
        return _refused(release, cmdline, f"the running kernel's image {kernel} is not readable (run with become: "
                                          "true)", kernel)
    try:
        initrd, how = boot_files.resolve(kernel, None, release, root, drivers)  # found as for any target
    except ValueError as exc:
        return _refused(release, cmdline, f"the way back to {release} would have no initrd: {exc}", kernel)
    with_initrd = f" with {initrd}" if initrd else f" without an initrd ({how})"
    return dict(zip(FIELDS, (True, kernel, initrd, cmdline, release,
                             f"the running kernel {release} is on disk: {kernel}{with_initrd}")))


def read(kho: host.KhoHost, root: str = "/", drivers=None) -> dict:
    """The way back of the kernel running now, read on the host before the jump (plan)."""
    release = kho.release()
    try:
        return plan(release, kho.cmdline(), host.boot_images(release, root), root, drivers)
    except Exception as exc:  # pylint: disable=broad-except  # a way back that cannot be read is no way back, never a failed jump
        return _refused(release, None, f"the way back could not be read: {type(exc).__name__}: {exc}")

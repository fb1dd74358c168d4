# Copyright (c) kexec.kho contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Configuration files written so that nothing is lost.  Not a public API."""

from __future__ import annotations

import os
import shutil
import tempfile
import time


def read(path: str) -> bytes | None:
    try:
        with open(path, "rb") as fh:
            return fh.read()
    except FileNotFoundError:
        return None


class Refused(Exception):
    """A file this collection will not write as asked."""


def target(path: str, follow: bool = True) -> str:
    """The file a write to ``path`` must change: a symlink's target (never the link itself), or refused."""
    if not os.path.islink(path):
        return path
    real = os.path.realpath(path)
    if not follow:
        raise Refused(f"{path} is a symbolic link to {real}; set follow_symlinks: true to write {real}, "
                      "or point the option at the real file")
    return real


def write_atomic(path: str, data: bytes, like: str | None = None, module=None, mode: int | None = None,
                 dir_mode: int = 0o755) -> None:
    """Every file the collection writes, written one way: a temp file in the same directory, fsync, rename,
    fsync the directory, so that a crash leaves the old file or the new one, never a part.

    The file gets the owner and mode of ``like`` (or of the file it replaces; 0644 for a new one), or exactly
    ``mode`` when given (private records).  A missing directory is made with ``dir_mode``.  With ``module``,
    the file keeps its SELinux context (as AnsibleModule.atomic_move does)."""
    ref = like or path
    try:
        st = os.stat(ref)
        old_mode, uid, gid = st.st_mode & 0o7777, st.st_uid, st.st_gid
    except FileNotFoundError:
        old_mode, uid, gid = 0o644, None, None
    mode = old_mode if mode is None else mode
    directory = os.path.dirname(os.path.abspath(path))
    os.makedirs(directory, mode=dir_mode, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=directory, prefix=f".{os.path.basename(path)}.")
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.chmod(tmp, mode)
        if uid is not None and os.geteuid() == 0:
            os.chown(tmp, uid, gid)
        if module is not None and module.selinux_enabled():
            context = module.selinux_context(ref) if os.path.exists(ref) else module.selinux_default_context(path)
            module.set_context_if_different(tmp, context, False)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    dir_fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(dir_fd)  # the rename itself survives a crash
    finally:
        os.close(dir_fd)


def backup(path: str) -> str | None:
    """A timestamped copy beside the file, with its mode (so never more readable than it)."""
    if not os.path.exists(path):
        return None
    dest = f"{path}.{time.strftime('%Y-%m-%d@%H:%M:%S')}~"
    n = 0
    while os.path.exists(dest):
        n += 1
        dest = f"{path}.{time.strftime('%Y-%m-%d@%H:%M:%S')}.{n}~"
    fd = os.open(dest, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    os.close(fd)
    shutil.copy2(path, dest)
    st = os.stat(path)
    if os.geteuid() == 0:
        os.chown(dest, st.st_uid, st.st_gid)
    return dest

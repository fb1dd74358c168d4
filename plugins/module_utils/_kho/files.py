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


def write_atomic(path: str, data: bytes, like: str | None = None) -> None:
    """Temp file in the same directory, same owner and mode as ``like`` (or the file), fsync, rename."""
    ref = like or path
    try:
        st = os.stat(ref)
        mode, uid, gid = st.st_mode & 0o7777, st.st_uid, st.st_gid
    except FileNotFoundError:
        mode, uid, gid = 0o644, None, None
    directory = os.path.dirname(path) or "."
    os.makedirs(directory, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=directory, prefix=f".{os.path.basename(path)}.")
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.chmod(tmp, mode)
        if uid is not None and os.geteuid() == 0:
            os.chown(tmp, uid, gid)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


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

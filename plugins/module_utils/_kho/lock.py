# Copyright (c) kexec.kho contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
"""The per-host handover lock: a JSON record under /run, read and changed only under flock.  Not a public API.

/run is a tmpfs, so the lock goes away with the jump.  Taking it over is a compare-and-swap:
a holder is replaced only when the caller names the run it replaces.  An owner is a run and the
inventory name it hands over (``target``): one run reaching one host under two names holds the
lock for one name at a time, so the two handovers are serialised.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os

from ansible_collections.kexec.kho.plugins.module_utils._kho.files import write_atomic
from ansible_collections.kexec.kho.plugins.module_utils._kho import paths

# What taking the lock needs: kho_lock's options, and kho_facts' lock suboptions.
ARGUMENT_SPEC = {
    "path": {"type": "path", "default": paths.LOCK},
    "break_lock": {"type": "str"},
    "owner": {"type": "dict"},
}


def same_owner(a: dict | None, b: dict) -> bool:
    return a is not None and a.get("run") == b.get("run") and a.get("target") == b.get("target")


class HeldByOther(Exception):
    def __init__(self, holder: dict):
        super().__init__(f"held by run {holder.get('run')!r}")
        self.holder = holder


@contextlib.contextmanager
def _guard(path: str, check_mode: bool = False):
    """The flock every read-then-write holds; in check mode nothing is created (no guard: nothing to guard)."""
    if check_mode and not os.path.exists(f"{path}.guard"):
        yield
        return
    os.makedirs(os.path.dirname(path) or ".", mode=0o700, exist_ok=True)
    fd = os.open(f"{path}.guard", os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)


def read(path: str) -> dict | None:
    """The holder's record; a record that is not JSON still names its file, so it is never ignored."""
    try:
        with open(path, "rb") as fh:
            raw = fh.read(65536)
    except FileNotFoundError:
        return None
    except IsADirectoryError:
        return {"run": f"unknown (a directory at {path})"}
    try:
        record = json.loads(raw)
    except ValueError:
        record = None
    return record if isinstance(record, dict) and isinstance(record.get("run"), str) else {
        "run": f"unknown (unreadable record in {path})"}


def _write(path: str, owner: dict) -> None:
    # mode and owner taken from the guard file, which _guard created 0600
    write_atomic(path, json.dumps(owner, sort_keys=True).encode() + b"\n", like=f"{path}.guard")


def acquire(path: str, owner: dict, replace: str | None = None, check_mode: bool = False) -> dict:
    """Take the lock for owner['run'], or take it over from the run named by ``replace``."""
    with _guard(path, check_mode):
        current = read(path)
        if same_owner(current, owner):
            return {"changed": False, "acquired": True, "holder": current, "previous": None}
        if current is not None and current["run"] != replace:
            return {"changed": False, "acquired": False, "holder": current, "previous": None}
        if not check_mode:
            _write(path, owner)
        return {"changed": True, "acquired": True, "holder": owner, "previous": current}


def owner_of(params: dict) -> dict:
    """The owner the action plugin set, or ValueError: a lock without a run id would be nobody's."""
    owner = params.get("owner") or {}
    if not isinstance(owner.get("run"), str) or not owner["run"]:
        raise ValueError(f"owner must carry a run id (set by the action plugin), not {owner!r}")
    return owner


def take(params: dict, check_mode: bool = False) -> dict:
    """acquire() with the options of ARGUMENT_SPEC, and a message saying who holds the lock."""
    path = params["path"]
    result = acquire(path, owner_of(params), params.get("break_lock"), check_mode)
    held = result["holder"]["run"]
    return {**result, "path": path, "msg": f"holding {path}" if result["acquired"] else f"{path} is held by run {held}"}


def release(path: str, owner: dict, check_mode: bool = False) -> dict:
    """Remove the lock if ``owner`` holds it; raise HeldByOther if another owner does."""
    with _guard(path, check_mode):
        current = read(path)
        if current is None:
            return {"changed": False, "holder": None}
        if not same_owner(current, owner):
            raise HeldByOther(current)
        if not check_mode:
            os.unlink(path)
        return {"changed": True, "holder": None}

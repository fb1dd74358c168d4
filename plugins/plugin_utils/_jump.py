# Copyright (c) kexec.kho contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Waiting for a host to come back on a new boot.  Not a public API.

Kept apart from the action plugin so that the timing logic is tested without a host.
"""

from __future__ import annotations

import re
import shlex
import socket
import time

BOOT_ID = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$")
BOOT_ID_PATH = "/proc/sys/kernel/random/boot_id"
LOADED_PATH = "/sys/kernel/kexec_loaded"


class NotBack(Exception):
    """The host did not answer on a new boot id in time."""

    def __init__(self, msg: str, old_answers: int = 0, seen_down: bool = True):
        super().__init__(msg)
        self.old_answers, self.seen_down = old_answers, seen_down


class NotJumped(NotBack):
    """The host still answers on its old boot, never seen gone, well after the trigger: no jump happened."""


def boot_id(text) -> str | None:
    """A well-formed boot id from a command's output, or None (an error message is never one)."""
    value = (text or "").strip()
    return value if BOOT_ID.match(value) else None


def ssh_banner(host: str, port: int, timeout: float) -> bool:
    """An SSH server answers on host:port (the cheap first sign that a host is back)."""
    try:
        with socket.create_connection((host, port), timeout=timeout) as sock:
            sock.settimeout(timeout)
            return sock.recv(4) == b"SSH-"
    except OSError:
        return False


def trigger_command(method: str, kexec: str) -> str:
    """One command that checks an image is still loaded, then starts the jump detached.

    The jump is delayed a second and detached, so this command returns before the
    kernel goes away: a kexec'd host never closes the SSH session that started it.
    """
    guard = f"test \"$(cat {LOADED_PATH})\" = 1 || {{ echo 'no kexec image is loaded' >&2; exit 3; }}"
    if method == "systemctl":
        return f"{guard}; systemctl --no-block kexec"
    kexec = shlex.quote(kexec)
    timer = f"systemd-run --quiet --on-active=1 --timer-property=AccuracySec=50ms {kexec} -e"
    detached = f"setsid sh -c {shlex.quote(f'sleep 1; exec {kexec} -e')} </dev/null >/dev/null 2>&1 &"
    return f"{guard}; if command -v systemd-run >/dev/null 2>&1; then {timer}; else {detached} fi"


HANDOVER_STATES = {
    "in": None,
    "no-in": "the host came back on a new boot but received no handover data: the jump did not carry KHO "
             "(an image loaded without -s, or a cold boot after a panic)",
    "no-kho": "the host came back on a new boot but shows no {kho} directory: debugfs is not mounted there, "
              "or the new kernel has no KHO; mount it at boot or set verify_handover: false",
}


def handover_check_command(debugfs_root: str) -> str:
    """One command printing in / no-in / no-kho: what the new kernel shows under debugfs."""
    kho = shlex.quote(debugfs_root.rstrip("/") + "/kho")
    return f"if [ -d {kho}/in ]; then echo in; elif [ -d {kho} ]; then echo no-in; else echo no-kho; fi"


def arrival_command(debugfs_root: str | None) -> str:
    """The boot id on the first line and, given a debugfs root, the handover check's answer after it.

    One round trip on the first connection to the new boot: no second command before the task returns.
    """
    read = f"cat {BOOT_ID_PATH}"
    return f"{read}; {handover_check_command(debugfs_root)}" if debugfs_root else read


def handover_failure(output: str, debugfs_root: str) -> str | None:
    """None when the check printed 'in'; otherwise why the handover is not shown as received."""
    state = (output or "").strip().splitlines()[-1:] or [""]
    if state[0] not in HANDOVER_STATES:
        return f"the handover check printed {output!r}, not one of {sorted(HANDOVER_STATES)}"
    msg = HANDOVER_STATES[state[0]]
    return msg and msg.format(kho=debugfs_root.rstrip("/") + "/kho")


def wait_for_new_boot(read_boot_id, old_id: str, timeout: float, interval: float = 0.25, probe=None,
                      wait_gone: float = 30.0, not_jumped_after: float | None = None, clock=time.monotonic,
                      sleep=time.sleep) -> dict:
    """Poll until read_boot_id() returns a well-formed id other than old_id.

    ``probe`` (optional) is a cheap check run first on each round, such as an SSH banner
    read, so that a host that is back is seen within ``interval`` and not after a back-off.
    With a probe, polling starts once the old kernel has stopped answering (or after
    ``wait_gone`` seconds), so no session is opened to a kernel about to vanish.
    Every failure of read_boot_id counts as 'not yet', and as a sign the old kernel is gone.
    Raises NotJumped when the old boot id still answers ``not_jumped_after`` seconds in and the
    host was never seen gone; NotBack after ``timeout``.  Each carries the old boot's answers.
    """
    start = clock()
    attempts, first_answer, last_error, seen_down, old_answers = 0, None, None, False, 0
    while probe is not None and clock() - start < min(wait_gone, timeout):
        if not probe():
            seen_down = True
            break
        sleep(interval)
    while clock() - start < timeout:
        answering = probe is None or probe()
        seen_down = seen_down or not answering
        if answering:
            if seen_down and first_answer is None:  # back after being seen gone
                first_answer = clock() - start
            attempts += 1
            try:
                new = boot_id(read_boot_id())
            except Exception as exc:  # pylint: disable=broad-except
                new, last_error, seen_down = None, exc, True
            if new and new != old_id:
                return {"boot_id": new, "attempts": attempts, "waited": clock() - start,
                        "first_answer": first_answer, "old_answers": old_answers}
            old_answers += new == old_id
            if old_answers and not seen_down and not_jumped_after is not None and clock() - start >= not_jumped_after:
                raise NotJumped(f"the jump did not happen: the host still answers on its old boot {old_id} "
                                f"{clock() - start:.0f} s after the trigger and was never seen gone",
                                old_answers, False)
        sleep(interval)
    detail = f"; last error: {last_error}" if last_error else ""
    raise NotBack(f"the host did not answer on a new boot id within {timeout:.0f} s "
                  f"({attempts} attempts{detail})", old_answers, seen_down)

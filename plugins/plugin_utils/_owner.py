# Copyright (c) kexec.kho contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Who is running: the controller process that owns a host's handover lock.  Not a public API.

Tasks run in worker processes forked from the ansible-playbook process, so the run is the
parent process, named by host, pid and start time (a recycled pid gets a new start time).
"""

from __future__ import annotations

import getpass
import os
import socket
import time


def start_time(pid: int, proc: str = "/proc") -> str | None:
    """Field 22 of /proc/PID/stat (clock ticks since boot), or None when the process is gone."""
    try:
        with open(f"{proc}/{pid}/stat", encoding="ascii", errors="replace") as fh:
            stat = fh.read()
    except OSError:
        return None
    fields = stat[stat.rfind(")") + 2:].split()  # the name, in parentheses, may hold spaces
    return fields[19] if len(fields) > 19 else None


def this_run(pid: int | None = None, proc: str = "/proc") -> dict:
    pid = pid or os.getppid()
    controller = socket.gethostname()
    return {"run": f"{controller}:{pid}:{start_time(pid, proc) or 'unknown'}", "controller": controller,
            "pid": pid, "user": getpass.getuser(), "since": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}


def ended(holder: dict, proc: str = "/proc") -> str | None:
    """Why the holding run is known to be over, or None when it may still be running."""
    try:
        controller, pid, started = holder["run"].rsplit(":", 2)
        pid = int(pid)
    except (KeyError, AttributeError, ValueError):
        return None
    if controller != socket.gethostname() or started == "unknown" or not os.path.isdir(proc):
        return None
    now = start_time(pid, proc)
    if now is None:
        return f"its process {pid} on {controller} has exited"
    if now != started:
        return f"its process {pid} on {controller} has exited (the pid now belongs to another process)"
    return None

# Copyright (c) kexec.kho contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Who is running: the controller process that owns a host's handover lock.  Not a public API.

Tasks run in worker processes forked from the ansible-playbook process, so the run is the
parent process, named by host, pid, start time (a recycled pid gets a new start time) and a
random nonce that the run's first task writes under RUNS_DIR.  The record also carries the
controller's machine id and pid namespace: a run is called ended only on the controller (same
host name, machine id and pid namespace) that holds its nonce, so that two containers or CI
images with one host name never take each other's locks.
"""

from __future__ import annotations

import getpass
import os
import secrets
import socket
import time

from ansible_collections.kexec.kho.plugins.module_utils._kho import paths

RUNS_DIR = os.path.join(os.path.expanduser("~"), ".ansible", "kexec-kho", "runs")
LOCK_MODULE = "kexec.kho.kho_lock"
RUNS_KEPT = 30 * 86400  # nonce files older than this are removed when a new run starts


def start_time(pid: int, proc: str = "/proc") -> str | None:
    """Field 22 of /proc/PID/stat (clock ticks since boot), or None when the process is gone."""
    try:
        with open(f"{proc}/{pid}/stat", encoding="ascii", errors="replace") as fh:
            stat = fh.read()
    except OSError:
        return None
    fields = stat[stat.rfind(")") + 2:].split()  # the name, in parentheses, may hold spaces
    return fields[19] if len(fields) > 19 else None


def machine_id() -> str | None:
    for path in ("/etc/machine-id", "/var/lib/dbus/machine-id"):
        try:
            with open(path, encoding="ascii", errors="replace") as fh:
                return fh.read(64).strip() or None
        except OSError:
            continue
    return None


def pid_namespace(proc: str = "/proc") -> str | None:
    try:
        return os.readlink(f"{proc}/self/ns/pid")
    except OSError:
        return None


def nonce(pid: int, started: str, runs_dir: str = RUNS_DIR) -> str | None:
    """This run's nonce: the first task creates it (atomically, by link), every later task reads it."""
    path = os.path.join(runs_dir, f"{pid}-{started}")
    try:
        with open(path, encoding="ascii") as fh:
            return fh.read(64).strip()
    except FileNotFoundError:
        pass
    except OSError:
        return None
    try:
        os.makedirs(runs_dir, mode=0o700, exist_ok=True)
        _prune(runs_dir)
        value = secrets.token_hex(8)
        tmp = f"{path}.{os.getpid()}.tmp"
        with open(os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600), "w", encoding="ascii") as fh:
            fh.write(value)
        try:
            os.link(tmp, path)
        except FileExistsError:  # another worker of this run was first
            with open(path, encoding="ascii") as fh:
                value = fh.read(64).strip()
        finally:
            os.unlink(tmp)
        return value
    except OSError:
        return None


def _prune(runs_dir: str) -> None:
    cutoff = time.time() - RUNS_KEPT
    for name in os.listdir(runs_dir):
        try:
            if os.stat(os.path.join(runs_dir, name)).st_mtime < cutoff:
                os.unlink(os.path.join(runs_dir, name))
        except OSError:
            continue


def this_run(pid: int | None = None, proc: str = "/proc", target: str | None = None, runs_dir: str = RUNS_DIR) -> dict:
    """This run, handing over ``target`` (the inventory name: one host's two names are two owners)."""
    pid = pid or os.getppid()
    controller = socket.gethostname()
    started = start_time(pid, proc) or "unknown"
    return {"run": f"{controller}:{pid}:{started}:{nonce(pid, started, runs_dir) or 'unknown'}",
            "controller": controller, "machine_id": machine_id(), "pid_namespace": pid_namespace(proc),
            "target": target, "pid": pid, "user": getpass.getuser(),
            "since": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}


def ended(holder: dict, proc: str = "/proc", runs_dir: str = RUNS_DIR) -> str | None:
    """Why the holding run is known to be over, or None when it may still be running (or ran elsewhere)."""
    try:
        controller, pid, started, run_nonce = holder["run"].rsplit(":", 3)
        pid = int(pid)
    except (KeyError, AttributeError, ValueError):
        return None
    if controller != socket.gethostname() or "unknown" in (started, run_nonce) or not os.path.isdir(proc):
        return None
    if holder.get("machine_id") != machine_id() or holder.get("pid_namespace") != pid_namespace(proc):
        return None  # same host name, another machine or container: its processes are not ours to see
    try:
        with open(os.path.join(runs_dir, f"{pid}-{started}"), encoding="ascii") as fh:
            if fh.read(64).strip() != run_nonce:
                return None
    except OSError:
        return None  # no proof that the run ever ran on this controller
    now = start_time(pid, proc)
    if now is None:
        return f"its process {pid} on {controller} has exited"
    if now != started:
        return f"its process {pid} on {controller} has exited (the pid now belongs to another process)"
    return None


def acquire(run, owner: dict, path: str, lock_of=lambda res: res, runs_dir: str = RUNS_DIR) -> dict:
    """Take a host's handover lock through a module run, ``run(break_lock)``; ``lock_of(result)`` is its lock part.

    Where another run holds the lock and that run is known to be over (ended()), the module runs again and
    takes that exact holder's lock over; any other holder is a failure that names it and the way out.
    """
    res = run(None)
    if res.get("failed") or lock_of(res).get("acquired"):
        return res
    holder = lock_of(res)["holder"]
    why = ended(holder, runs_dir=runs_dir) if holder.get("run") != owner["run"] else None  # ours: another name
    if why:
        res = run(holder["run"])
        if res.get("failed"):
            return res
        if lock_of(res).get("acquired"):
            return {**res, "msg": f"took over the lock of run {holder['run']}: {why}"}
        holder = lock_of(res)["holder"]  # another run took it over first
    if holder.get("run") == owner["run"]:
        return {**res, "failed": True,
                "msg": f"this run already holds {path} on this host for inventory host {holder.get('target')!r}: "
                       "one host reached under two inventory names is handed over under one name at a time"}
    return {**res, "failed": True,
            "msg": f"another handover holds {path} on this host: run {holder['run']}"
                   f" ({holder.get('user', '?')}@{holder.get('controller', '?')} since {holder.get('since', '?')})."
                   f" It goes away with the next boot. If that run is over, take the lock over with"
                   f" break_lock: {holder['run']!r} (kho_handover_break_lock in the role)"}


def lock(execute_module, task_vars, args: dict) -> dict:
    """kho_lock on the host as this run (``execute_module``: the action's _execute_module): released as ``args``
    say, or acquired, taking over the lock of a run known to be over (acquire)."""
    args = {**args, "owner": this_run(target=(task_vars or {}).get("inventory_hostname"))}

    def execute(break_lock=None):
        return execute_module(module_name=LOCK_MODULE, task_vars=task_vars,
                              module_args={**args, **({"break_lock": break_lock} if break_lock else {})})
    if args.get("state", "acquired") != "acquired":
        return execute()
    return acquire(execute, args["owner"], args.get("path") or paths.LOCK)

"""One lab guest's life in QEMU: its command line, a free port, the start (restored from the booted snapshot or
cold), the wait for SSH (a panic on the serial log is not waited out), the monitor, and the stop of exactly the
QEMU it started.  A guest is a dict (what `up` records in guests.json)."""

from __future__ import annotations

import os
import re
import shutil
import signal
import socket
import subprocess
import time
from pathlib import Path

from lab_common import SNAPSHOT, log, ssh_key

PANIC = re.compile(rb"Kernel panic - not syncing|Oops: int3")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def monitor(path: str, command: str, timeout: float = 600.0) -> str:
    """One HMP command on a guest's monitor socket; returns its output (savevm answers when done)."""
    with socket.socket(socket.AF_UNIX) as s:
        s.settimeout(timeout)
        s.connect(path)
        reply = b""
        for line in (None, command):
            if line:
                s.sendall(line.encode() + b"\n")
            reply = b""
            while not reply.endswith(b"(qemu) "):
                chunk = s.recv(65536)
                if not chunk:
                    break
                reply += chunk
    return reply.decode(errors="replace").replace("\r", "")


def qemu_argv(guest: dict, no_reboot: bool) -> list[str]:
    accel = ["-accel", "kvm", "-cpu", "host"] if guest["accel"] == "kvm" else ["-accel", "tcg", "-cpu", "max"]
    argv = [
        "qemu-system-x86_64", *accel, "-m", str(guest["memory"]), "-smp", "2",
        "-nodefaults", "-display", "none", "-no-user-config",
        *(["-kernel", guest["kernel"], "-append", guest["cmdline"]] if guest["boot"] == "kernel" else []),
        "-drive", f"file={guest['overlay']},if=virtio,format=qcow2",
        "-netdev", f"user,id=n0,hostfwd=tcp:127.0.0.1:{guest['port']}-:22",
        "-device", "virtio-net-pci,netdev=n0",
        "-device", "virtio-rng-pci",
        "-serial", f"file:{guest['serial']}",
        "-monitor", f"unix:{guest['monitor']},server=on,wait=off",
        "-pidfile", guest["pidfile"], "-daemonize",
    ]
    if guest.get("restore"):
        argv += ["-loadvm", SNAPSHOT]
    if no_reboot:
        argv.append("-no-reboot")
    return argv


def ssh_banner(port: int, timeout: float = 1.0) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=timeout) as s:
            s.settimeout(timeout)
            return s.recv(8).startswith(b"SSH-")
    except OSError:
        return False


def wait_ssh(guest: dict, deadline: float) -> str:
    """'up', 'panic' or 'timeout'; reads the serial log so a panic is not waited out."""
    serial = Path(guest["serial"])
    while time.monotonic() < deadline:
        if ssh_banner(guest["port"]):
            return "up"
        if serial.exists() and PANIC.search(serial.read_bytes()):
            return "panic"
        time.sleep(0.1)
    return "timeout"


def pid_of(guest: dict) -> int | None:
    try:
        pid = int(Path(guest["pidfile"]).read_text().strip())
        os.kill(pid, 0)
        cmd = Path(f"/proc/{pid}/cmdline").read_bytes()
        return pid if guest["overlay"].encode() in cmd else None
    except (OSError, ValueError):
        return None


def stop_guest(guest: dict) -> None:
    pid = pid_of(guest)
    if pid:
        os.kill(pid, signal.SIGTERM)
        for _tick in range(50):
            if pid_of(guest) is None:
                break
            time.sleep(0.1)
        else:
            os.kill(pid, signal.SIGKILL)
    Path(guest["pidfile"]).unlink(missing_ok=True)


def start_qemu(guest: dict, no_reboot: bool, tries: int = 5) -> None:
    """Start QEMU on a free port; a port taken between the pick and QEMU's bind is picked again."""
    for _attempt in range(tries):
        guest["port"] = guest["port"] or free_port()
        if guest.get("restore"):
            shutil.copyfile(guest["restore"], guest["overlay"])  # the snapshot lives in the overlay itself
            os.chmod(guest["overlay"], 0o600)
        proc = subprocess.run(qemu_argv(guest, no_reboot), capture_output=True, text=True, check=False)
        if proc.returncode == 0:
            return
        if "hostfwd" not in proc.stderr and "Could not set up host forwarding" not in proc.stderr:
            raise SystemExit(f"{guest['name']}: QEMU did not start: {proc.stderr.strip()}")
        guest["port"] = 0
    raise SystemExit(f"{guest['name']}: no free port after {tries} tries")


def boot_guest(guest: dict, no_reboot: bool, timeout: float, tries: int = 3) -> float:
    for attempt in range(1, tries + 1):
        Path(guest["serial"]).unlink(missing_ok=True)
        started = time.monotonic()
        start_qemu(guest, no_reboot)
        state = wait_ssh(guest, started + timeout)
        if state == "up":
            if guest.get("restore"):  # the snapshot's clock and entropy are the same for every restore
                subprocess.run(ssh_argv(guest, f"date -s @{time.time():.3f} >/dev/null; "
                                               f"echo {os.urandom(32).hex()} > /dev/urandom"),
                               check=False, capture_output=True, timeout=60)
            return round(time.monotonic() - started, 2)
        stop_guest(guest)
        log(f"{guest['name']}: boot {attempt} ended in {state}; see {guest['serial']}")
        guest["restore"] = None  # a restore that did not answer: boot cold instead
    raise SystemExit(f"{guest['name']} did not boot after {tries} tries")


def ssh_argv(guest: dict, *command: str) -> list[str]:
    return ["ssh", "-i", str(ssh_key()), "-p", str(guest["port"]), "-o", "StrictHostKeyChecking=no",
            "-o", "UserKnownHostsFile=/dev/null", "-o", "LogLevel=ERROR", "-o", "ConnectTimeout=5",
            "-o", "BatchMode=yes", "root@127.0.0.1", *command]

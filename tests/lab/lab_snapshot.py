"""How a guest starts: the accelerator (KVM only where it really boots the lab kernel: a probe, cached) and the
booted-guest snapshot that `up` restores (one per kernel, disk, command line, accelerator, memory, QEMU and CPU)."""

from __future__ import annotations

import os
import shutil
import subprocess
import time
from pathlib import Path

from lab_common import CACHE, SNAPSHOT, SNAPSHOT_RECIPE, cpu_model, digest, locked, log, run, run_dir
from lab_guests import boot_guest, monitor, pid_of, ssh_argv, stop_guest


def kvm_works(kernel: str, wait: float = 20.0) -> bool:
    """Whether KVM boots the lab kernel here: KHO_LAB_ACCEL decides when set, else a probe boot, cached.

    /dev/kvm alone proves nothing: on a nested set-up a kernel can hang right after decompression,
    so the probe waits for the kernel's own first console line ("Linux version").
    """
    forced = os.environ.get("KHO_LAB_ACCEL")
    if forced in ("kvm", "tcg"):
        return forced == "kvm"
    if not os.access("/dev/kvm", os.R_OK | os.W_OK):
        return False
    verdict = CACHE / "kvm-probe" / digest(Path(kernel).read_bytes(), os.uname().release, cpu_model())
    if verdict.exists():
        return verdict.read_text() == "kvm"
    verdict.parent.mkdir(parents=True, exist_ok=True)
    serial = verdict.with_suffix(".serial.log")
    serial.unlink(missing_ok=True)
    log(f"probing KVM with a {wait:.0f} s boot of the lab kernel")
    with subprocess.Popen(["qemu-system-x86_64", "-accel", "kvm", "-cpu", "host", "-m", "256", "-nodefaults",
                           "-display", "none", "-no-user-config", "-no-reboot", "-kernel", kernel,
                           "-append", "console=ttyS0 panic=-1", "-serial", f"file:{serial}"],
                          stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL) as qemu:
        deadline = time.monotonic() + wait
        ok = False
        while not ok and qemu.poll() is None and time.monotonic() < deadline:
            time.sleep(0.2)
            ok = serial.exists() and b"Linux version" in serial.read_bytes()
        qemu.kill()
    accel = "kvm" if ok else "tcg"
    verdict.write_text(accel)
    log(f"KVM {'boots' if ok else 'does not boot'} the lab kernel here: {accel}")
    return ok


def snapshot_path(info: dict, accel: str, memory: int, cmdline: str) -> Path:
    """The cached booted-guest snapshot for these inputs (QEMU, CPU and accelerator included)."""
    qemu = subprocess.run(["qemu-system-x86_64", "--version"], capture_output=True, text=True, check=True).stdout
    return CACHE / f"snap-{digest(info['disk'], info['kernel'], accel, str(memory), cmdline, qemu, cpu_model(), SNAPSHOT_RECIPE)}.qcow2"


def build_snapshot(info: dict, accel: str, memory: int, cmdline: str, timeout: float = 300.0) -> Path:
    """Boot one guest cold, let systemd finish, save RAM, devices and disk as one internal snapshot.

    A restore (-loadvm) then takes about a second where a cold TCG boot takes 12 to 26 s. Guests
    restored from one snapshot share its boot id and machine id until their first jump.
    """
    snap = snapshot_path(info, accel, memory, cmdline)
    if snap.exists():
        return snap
    with locked(snap.with_suffix(".lock")):  # two `up`s wanting one snapshot: one boots it, the other waits
        if not snap.exists():
            save_snapshot(snap, info, accel, memory, cmdline, timeout)
    return snap


def save_snapshot(snap: Path, info: dict, accel: str, memory: int, cmdline: str, timeout: float) -> None:
    """build_snapshot's work: the cold boot, systemd settled, `savevm`, then the qcow2 renamed into the cache."""
    rd = run_dir(f"snapshot-{os.getpid()}")
    rd.mkdir(parents=True, exist_ok=True)
    try:
        tmp = rd / "snapshot.qcow2"
        run(["qemu-img", "create", "-q", "-f", "qcow2", "-F", "raw", "-b", info["disk"], str(tmp)])
        guest = {"name": "snapshot", "port": 0, "accel": accel, "memory": memory, "boot": "kernel",
                 "kernel": info["kernel"], "cmdline": cmdline, "overlay": str(tmp), "restore": None,
                 "serial": str(rd / "snapshot.serial.log"), "pidfile": str(rd / "snapshot.pid"),
                 "monitor": str(rd / "snapshot.mon")}
        started = time.monotonic()
        boot_guest(guest, False, timeout)
        settled = subprocess.run(ssh_argv(guest, "timeout 240 systemctl is-system-running --wait; sync"),
                                 capture_output=True, text=True, check=False, timeout=300)
        log(f"snapshot guest booted, systemd says {settled.stdout.strip() or settled.stderr.strip()!r}")
        out = monitor(guest["monitor"], f"savevm {SNAPSHOT}")
        if "Error" in out or "error" in out:
            raise SystemExit(f"savevm failed: {out}")
        monitor(guest["monitor"], "quit", timeout=30)
        for _tick in range(100):
            if pid_of(guest) is None:
                break
            time.sleep(0.1)
        stop_guest(guest)
        tmp.chmod(0o600)
        tmp.rename(snap)
        log(f"snapshot {snap.name} saved in {round(time.monotonic() - started, 1)} s")
    finally:
        shutil.rmtree(rd, ignore_errors=True)

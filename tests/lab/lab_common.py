"""What every part of the lab shares: where the cache is, what the guests boot with, the recipes' versions that key
the cache, and the few helpers each part uses (log, run, digest, the cache's locks, a lab name's run dir, the SSH
key).  Standard library only: the lab runs before the test venv exists."""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import os
import subprocess
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
CACHE = Path(os.environ.get("KHO_LAB_CACHE", Path.home() / ".cache" / "kho-lab"))
FRAGMENT = HERE / "kho-lab.config"

SOURCE_PACKAGE = "linux-source-7.3"
SOURCE_SUITE = "trixie-backports"
# Kernels of other releases (#35: a kexec is a kernel update), each from Debian's source package of its own suite,
# fetched through an apt list of its own: release -> (package, suite).  The lab's own kernel is the first.
RELEASES = {
    "7.3.4": (SOURCE_PACKAGE, SOURCE_SUITE),
    "7.2.13": ("linux-source-7.2", "sid"),
    "7.3-rc7": ("linux-source-7.3", "experimental"),
}
LAB_RELEASE = "7.3.4"
DEBIAN_SUITE = "bookworm"
MIRROR = "http://deb.debian.org/debian"
# Bumped when a recipe below changes in a way its inputs do not show.
KERNEL_RECIPE = "3"
ROOTFS_RECIPE = "3"
DISK_RECIPE = "4"
GRUB_RECIPE = "1"
SNAPSHOT_RECIPE = "1"
SNAPSHOT = "booted"  # the internal qcow2 snapshot (RAM, devices, disk) that `up` restores
GUEST_KERNEL = "/boot/vmlinuz-kho"
RESERVE_MEM = "reserve_mem=1M:4096:oops ramoops.mem_name=oops ramoops.pmsg_size=65536"
GUEST_CMDLINE = "rw console=ttyS0 8250.nr_uarts=1 tsc=reliable net.ifnames=0 panic=-1 " + RESERVE_MEM
BASE_CMDLINE = f"root=/dev/vda kho=on {GUEST_CMDLINE}"
BUILD_LOCK = CACHE / ".build.lock"  # two builds in one tree corrupt it: the second one waits


def log(msg: str) -> None:
    print(f"[lab {time.strftime('%H:%M:%S')}] {msg}", flush=True)


def run(argv: list[str], **kw) -> subprocess.CompletedProcess:
    return subprocess.run(argv, check=True, **kw)


def digest(*parts: str | bytes) -> str:
    h = hashlib.sha256()
    for p in parts:
        h.update(p if isinstance(p, bytes) else p.encode())
        h.update(b"\0")
    return h.hexdigest()[:16]


def cpu_model() -> str:
    """/proc/cpuinfo's first `model name` line: part of the KVM verdict's and the snapshot's keys."""
    return next((line for line in Path("/proc/cpuinfo").read_text().splitlines() if line.startswith("model name")), "")


@contextlib.contextmanager
def locked(path: Path):
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        yield


def run_dir(name: str) -> Path:
    return CACHE / "run" / name


def ssh_key() -> Path:
    key = CACHE / "ssh" / "id_ed25519"
    if not key.exists():
        key.parent.mkdir(parents=True, exist_ok=True)
        run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "kho-lab", "-f", str(key)])
    return key

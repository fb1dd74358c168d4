"""What is in a lab guest: its flavours' root file systems (suite and packages) with their own files, and the
files the lab puts in every guest (network, SSH, the `lab` user, the lab kernel)."""

from __future__ import annotations

from pathlib import Path

from lab_common import DEBIAN_SUITE, GUEST_KERNEL

GUEST_PACKAGES = [
    "python3", "openssh-server", "kexec-tools", "iproute2", "systemd-sysv",
    "dbus", "udev", "sudo", "procps", "kmod", "grub2-common",
]
# A service that keeps its data in a memfd in its systemd fd store, preserved across `systemctl kexec`
# (systemd 261 and later, through LUO).  It writes what it found to /run/kho-cache.state.
CACHE_SERVICE = """\
#!/usr/bin/python3
import os, socket, time
names = os.environ.get("LISTEN_FDNAMES", "").split(":") if os.environ.get("LISTEN_PID") == str(os.getpid()) else []
fds = dict(zip(names, range(3, 3 + int(os.environ.get("LISTEN_FDS", "0") or 0))))
boot = open("/proc/sys/kernel/random/boot_id").read().strip()
if "cache" in fds:
    memfd, how = fds["cache"], "restored"
    data = os.pread(memfd, 4096, 0).decode()
else:
    memfd, how, data = os.memfd_create("cache"), "created", f"kho-cache data from boot {boot}"
    os.write(memfd, data.encode())
addr = os.environ["NOTIFY_SOCKET"]
addr = "\\0" + addr[1:] if addr.startswith("@") else addr
with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
    sock.connect(addr)  # socket.send_fds ignores its address argument
    if how == "created":
        socket.send_fds(sock, [b"FDSTORE=1\\nFDNAME=cache"], [memfd])
    sock.send(b"READY=1")
with open("/run/kho-cache.state", "w") as f:
    f.write(f"{how} on boot {boot}: {data}\\n")
while True:
    time.sleep(3600)
"""
CACHE_UNIT = """\
[Unit]
Description=kexec.kho lab: data kept in a memfd in the fd store across a kexec

[Service]
Type=notify
NotifyAccess=main
# Python's start alone takes a minute or more under TCG
TimeoutStartSec=10min
ExecStart=/usr/local/bin/kho-cache-service
FileDescriptorStoreMax=4
FileDescriptorStorePreserve=yes

[Install]
WantedBy=multi-user.target
"""
# Guest flavours: the root fs (suite, packages) and files of their own.  sid: systemd 262, kexec-tools 2.0.32,
# for live update (leave systemd-resolved out: it fails to configure in a chroot).
FLAVOURS = {
    "bookworm": {"suite": DEBIAN_SUITE, "packages": GUEST_PACKAGES, "files": {}, "enable": []},
    "sid": {"suite": "sid",
            "packages": ["python3", "openssh-server", "kexec-tools", "iproute2", "systemd-sysv", "dbus", "udev",
                         "sudo", "procps", "kmod"],
            "files": {"usr/local/bin/kho-cache-service": (CACHE_SERVICE, 0o755),
                      "etc/systemd/system/kho-cache.service": (CACHE_UNIT, 0o644)},
            "enable": ["kho-cache.service"]},
    # packaged: bookworm with initramfs-tools, so that a kernel package installed with dpkg gets its initramfs made
    # by the guest's own hook, as an `apt upgrade` does (#35).
    "packaged": {"suite": DEBIAN_SUITE, "packages": [*GUEST_PACKAGES, "initramfs-tools"], "files": {}, "enable": []},
}


def guest_files(kernel: Path, pub: str) -> dict[str, tuple[str | bytes, int]]:
    return {
        "etc/hostname": ("kho-lab\n", 0o644),
        "etc/hosts": ("127.0.0.1 localhost kho-lab\n", 0o644),
        "etc/fstab": ("/dev/vda / ext4 rw,errors=remount-ro 0 1\n"
                      "debugfs /sys/kernel/debug debugfs defaults 0 0\n", 0o644),
        "etc/systemd/network/20-eth.network": (
            "[Match]\nName=eth0\n\n[Network]\nDHCP=ipv4\n", 0o644),
        "etc/ssh/sshd_config.d/lab.conf": (
            "UseDNS no\nPermitRootLogin prohibit-password\nPasswordAuthentication no\n", 0o644),
        "root/.ssh/authorized_keys": (pub, 0o600),
        "home/lab/.ssh/authorized_keys": (pub, 0o600),
        "etc/sudoers.d/lab": ("lab ALL=(ALL) NOPASSWD: ALL\n", 0o440),
        GUEST_KERNEL.lstrip("/"): (kernel.read_bytes(), 0o644),
    }

"""The kexec.kho lab: a real KHO kernel and a Debian guest in QEMU.

    lab.py setup-host        install what the lab needs from Debian (idempotent)
    lab.py build             build (or reuse) the kernel, the root fs and the disk
    lab.py build --snapshot  ... and the booted-guest snapshot that `up` restores
    lab.py up [-n N]         start N guests (restored from the booted snapshot, or --cold),
                             wait for SSH, write an inventory
                             (--boot grub: through a real GRUB on the disk, KHO off)
    lab.py down              stop exactly the guests this lab name started
    lab.py status            print the running guests as JSON

Every artefact is cached under $KHO_LAB_CACHE (default ~/.cache/kho-lab),
keyed by what made it.  Guests of one lab name live under run/<name>/.
"""

from __future__ import annotations

import argparse
import contextlib
import fcntl
import hashlib
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
CACHE = Path(os.environ.get("KHO_LAB_CACHE", Path.home() / ".cache" / "kho-lab"))
FRAGMENT = HERE / "kho-lab.config"

SOURCE_PACKAGE = "linux-source-7.3"
SOURCE_SUITE = "trixie-backports"
DEBIAN_SUITE = "bookworm"
MIRROR = "http://deb.debian.org/debian"
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
}
HOST_PACKAGES = [
    "qemu-system-x86", "qemu-utils", "debootstrap", "e2fsprogs", "openssh-client",
    "build-essential", "bc", "flex", "bison", "libelf-dev", "libssl-dev", "cpio",
    "xz-utils", "device-tree-compiler", "grub-common", "grub-pc-bin", "rsync", "kmod", "chromium",
]
# Bumped when a recipe below changes in a way its inputs do not show.
KERNEL_RECIPE = "3"
ROOTFS_RECIPE = "3"
DISK_RECIPE = "4"
GRUB_RECIPE = "1"
SNAPSHOT_RECIPE = "1"
SNAPSHOT = "booted"  # the internal qcow2 snapshot (RAM, devices, disk) that `up` restores
GRUB_MODULES = Path("/usr/lib/grub/i386-pc")
GUEST_KERNEL = "/boot/vmlinuz-kho"
RESERVE_MEM = "reserve_mem=1M:4096:oops ramoops.mem_name=oops ramoops.pmsg_size=65536"
GUEST_CMDLINE = "rw console=ttyS0 8250.nr_uarts=1 tsc=reliable net.ifnames=0 panic=-1 " + RESERVE_MEM
BASE_CMDLINE = f"root=/dev/vda kho=on {GUEST_CMDLINE}"
PANIC = re.compile(rb"Kernel panic - not syncing|Oops: int3")


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


# ---------------------------------------------------------------- host set-up

def _apt_opts() -> list[str]:
    d = CACHE / "apt"
    return [
        "-o", f"Dir::Etc::SourceList={d / 'sources.list'}",
        "-o", "Dir::Etc::SourceParts=/dev/null",
        "-o", f"Dir::State::Lists={d / 'lists'}",
        "-o", "APT::Sandbox::User=root",
    ]


def unavailable() -> str | None:
    """Why this machine cannot run the lab, or None."""
    if os.environ.get("KHO_LAB", "1") == "0":
        return "KHO_LAB=0 is set"
    if os.geteuid() != 0:
        return "the lab needs root (debootstrap, apt-get, mkfs of a root-owned tree)"
    if not shutil.which("apt-get"):
        return "the lab needs a Debian host (apt-get)"
    free = shutil.disk_usage(CACHE if CACHE.exists() else Path.home()).free
    if free < 6 << 30:
        return f"the lab needs 6 GiB free under {CACHE}, there are {free >> 20} MiB"
    return None


def setup_host(_args=None) -> None:
    why = unavailable()
    if why:
        log(f"lab skipped: {why}")
        return
    missing = [p for p in HOST_PACKAGES
               if subprocess.run(["dpkg-query", "-W", "-f=${Status}", p],
                                 capture_output=True, text=True, check=False).stdout
               != "install ok installed"]
    if missing:
        log(f"installing from Debian: {' '.join(missing)}")
        env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
        run(["apt-get", "update", "-qq"], env=env)
        run(["apt-get", "install", "-y", "-qq", "--no-install-recommends", *missing], env=env)
    else:
        log("host packages present")


def fetch_source() -> Path:
    """Download the kernel source package from a separate apt list, untouched system."""
    d = CACHE / "apt"
    (d / "lists" / "partial").mkdir(parents=True, exist_ok=True)
    debs = sorted(d.glob(f"{SOURCE_PACKAGE}_*.deb"))
    if debs:
        return debs[-1]
    (d / "sources.list").write_text(
        f"deb [signed-by=/usr/share/keyrings/debian-archive-keyring.gpg] {MIRROR} {SOURCE_SUITE} main\n")
    log(f"fetching {SOURCE_PACKAGE} from {SOURCE_SUITE}")
    run(["apt-get", *_apt_opts(), "update", "-qq"])
    run(["apt-get", *_apt_opts(), "download", SOURCE_PACKAGE], cwd=d)
    return sorted(d.glob(f"{SOURCE_PACKAGE}_*.deb"))[-1]


def source_tree(deb: Path) -> Path:
    tree = CACHE / f"src-{deb.stem}"
    if (tree / "Makefile").exists():
        return tree
    log(f"unpacking {deb.name}")
    tmp = CACHE / f"src-{deb.stem}.tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    with subprocess.Popen(["dpkg-deb", "--fsys-tarfile", str(deb)], stdout=subprocess.PIPE) as p:
        run(["tar", "-x", "-C", str(tmp), "--wildcards", "*.tar.xz"], stdin=p.stdout)
    tarball = next(tmp.rglob("linux-source-*.tar.xz"))
    run(["tar", "-xJf", str(tarball), "-C", str(tmp)])
    inner = next(x for x in tmp.iterdir() if x.name.startswith("linux-source-") and x.is_dir())
    inner.rename(tree)
    shutil.rmtree(tmp)
    return tree


# ---------------------------------------------------------------- kernel

# Target kernels built from the same source with one part of live update left out (issue 27): a guest holding
# LUO sessions must be refused before any change when asked to hand over to them.
VARIANTS = {"nomemfd": "# CONFIG_LIVEUPDATE_MEMFD is not set\n", "noluo": "# CONFIG_LIVEUPDATE is not set\n"}


def kernel_dir(variant: str | None = None) -> Path:
    deb = fetch_source()
    extra = (VARIANTS[variant],) if variant else ()
    return CACHE / f"kernel-{digest(deb.name, FRAGMENT.read_bytes(), KERNEL_RECIPE, *extra)}"


def check_config(final: str, variant: str | None) -> None:
    """Every option the fragment sets is in the final config (a variant: its own option off, KHO still on)."""
    if variant:
        off = VARIANTS[variant].split()[1]
        if f"{off}=y\n" in final or "CONFIG_KEXEC_HANDOVER=y\n" not in final:
            raise SystemExit(f"kernel variant {variant}: {off} still set, or KHO dropped")
        return
    wanted = re.findall(r"^(CONFIG_\w+)=y$", FRAGMENT.read_text(), re.M)
    lost = [w for w in wanted if f"{w}=y\n" not in final]
    if lost:
        raise SystemExit(f"kernel config dropped: {', '.join(lost)}")


def build_kernel(variant: str | None = None) -> Path:
    out = kernel_dir(variant)
    if (out / "bzImage").exists():
        log(f"kernel cached: {out / 'bzImage'}")
        return out
    src = source_tree(fetch_source())
    build = out.with_name(out.name + ".build")
    build.mkdir(parents=True, exist_ok=True)
    started = time.monotonic()
    log(f"configuring kernel in {build}")
    make = ["make", "-C", str(src), f"O={build}", f"-j{os.cpu_count() or 1}", "-s"]
    run([*make, "tinyconfig"])
    fragments = [str(src / "kernel/configs/kvm_guest.config"), str(FRAGMENT)]
    if variant:
        (build / "variant.config").write_text(VARIANTS[variant])
        fragments.append(str(build / "variant.config"))
    run([str(src / "scripts/kconfig/merge_config.sh"), "-m", "-O", str(build), str(build / ".config"), *fragments],
        stdout=subprocess.DEVNULL)
    run([*make, "olddefconfig"])
    check_config((build / ".config").read_text(), variant)
    log("building bzImage (minutes)")
    run([*make, "bzImage"])
    tmp = out.with_name(out.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()
    shutil.copy2(build / "arch/x86/boot/bzImage", tmp / "bzImage")
    shutil.copy2(build / ".config", tmp / "config")
    release = (build / "include/config/kernel.release").read_text().strip()
    seconds = round(time.monotonic() - started, 1)
    (tmp / "build.json").write_text(json.dumps({"release": release, "build_seconds": seconds}))
    tmp.rename(out)
    shutil.rmtree(build)
    log(f"kernel {release} built in {seconds} s")
    return out


# ---------------------------------------------------------------- root fs and disk

def ssh_key() -> Path:
    key = CACHE / "ssh" / "id_ed25519"
    if not key.exists():
        key.parent.mkdir(parents=True, exist_ok=True)
        run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "kho-lab", "-f", str(key)])
    return key


def build_rootfs(flavour: str = "bookworm") -> Path:
    suite, packages = FLAVOURS[flavour]["suite"], FLAVOURS[flavour]["packages"]
    tree = CACHE / f"rootfs-{digest(suite, *packages, ROOTFS_RECIPE)}"
    if (tree / "etc/os-release").exists():
        log(f"root fs cached: {tree}")
        return tree
    tmp = tree.with_name(tree.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    log(f"debootstrap {suite} into {tmp} (about 2 minutes)")
    started = time.monotonic()
    run(["debootstrap", "--variant=minbase", f"--include={','.join(packages)}",
         suite, str(tmp), MIRROR], stdout=subprocess.DEVNULL)
    for junk in ("var/cache/apt/archives", "var/lib/apt/lists"):
        for f in (tmp / junk).glob("*"):
            if f.is_file():
                f.unlink()
    tmp.rename(tree)
    log(f"root fs ready in {round(time.monotonic() - started, 1)} s")
    return tree


def _guest_files(kernel: Path, pub: str) -> dict[str, tuple[str | bytes, int]]:
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


def _stage(kernel: Path, tree: Path, pub: str, extra: dict | None = None) -> Path:
    """The guest's file tree: the root fs, the lab's files, and ``extra`` (relative path: (content, mode))."""
    stage = CACHE / "stage.tmp"
    shutil.rmtree(stage, ignore_errors=True)
    run(["cp", "-a", "--reflink=auto", str(tree), str(stage)])
    if not (stage / "home/lab").exists():
        run(["chroot", str(stage), "useradd", "-m", "-s", "/bin/bash", "lab"])
    for rel, (content, mode) in {**_guest_files(kernel, pub), **(extra or {})}.items():
        p = stage / rel
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_bytes(content if isinstance(content, bytes) else content.encode())
        p.chmod(mode)
    lab_ids = (stage / "etc/passwd").read_text().split("\nlab:")[1].split(":")[1:3]
    for p in [stage / "home/lab", *(stage / "home/lab").rglob("*")]:
        os.chown(p, int(lab_ids[0]), int(lab_ids[1]))
    (stage / "root/.ssh").chmod(0o700)
    (stage / "home/lab/.ssh").chmod(0o700)
    vml = stage / "vmlinuz"
    if vml.is_symlink() or vml.exists():
        vml.unlink()
    vml.symlink_to(GUEST_KERNEL.lstrip("/"))
    wants = stage / "etc/systemd/system/multi-user.target.wants"
    wants.mkdir(parents=True, exist_ok=True)
    link = wants / "systemd-networkd.service"
    if not link.exists():
        link.symlink_to("/lib/systemd/system/systemd-networkd.service")
    for unit in ("e2scrub_reap.service", "e2scrub_all.timer"):  # slow under TCG, no use in a lab
        masked = stage / "etc/systemd/system" / unit
        if not masked.is_symlink():
            masked.symlink_to("/dev/null")
    (stage / "etc/machine-id").write_text("")
    return stage


def _inputs(flavour: str = "bookworm") -> tuple[Path, Path, str]:
    kdir = build_kernel()
    tree = build_rootfs(flavour)
    return kdir, tree, ssh_key().with_suffix(".pub").read_text()


def build_disk(flavour: str = "bookworm") -> Path:
    """A whole-disk ext4 file system (root=/dev/vda), booted by QEMU's -kernel."""
    kdir, tree, pub = _inputs(flavour)
    spec = FLAVOURS[flavour]
    parts = [] if flavour == "bookworm" else [flavour, json.dumps(spec["files"]), *spec["enable"]]
    disk = CACHE / f"disk-{digest(kdir.name, tree.name, pub, DISK_RECIPE, *parts)}.img"
    if disk.exists():
        log(f"disk cached: {disk}")
        return disk
    log(f"assembling the guest disk image ({flavour})")
    stage = _stage(kdir / "bzImage", tree, pub, spec["files"])
    for unit in spec["enable"]:
        (stage / "etc/systemd/system/multi-user.target.wants" / unit).symlink_to(f"/etc/systemd/system/{unit}")
    tmp = disk.with_suffix(".tmp")
    run(["mkfs.ext4", "-q", "-F", "-L", "kho-lab", "-d", str(stage), str(tmp), "2G"])
    tmp.chmod(0o600)  # it holds the guests' SSH host keys
    tmp.rename(disk)
    shutil.rmtree(stage)
    return disk


GRUB_DEFAULTS = f"""\
# kexec.kho lab: booted by this GRUB from the disk's MBR; KHO is off until kho_cmdline turns it on.
GRUB_DEFAULT=0
GRUB_TIMEOUT=0
GRUB_DISTRIBUTOR=kho-lab
GRUB_CMDLINE_LINUX_DEFAULT=""
GRUB_CMDLINE_LINUX="{GUEST_CMDLINE}"
GRUB_DISABLE_LINUX_UUID=true
GRUB_DISABLE_RECOVERY=true
GRUB_DISABLE_OS_PROBER=true
"""
# Until update-grub first runs in the guest: what its 10_linux would write, by hand.
GRUB_CFG = f"""\
set default=0
set timeout=0
menuentry 'kho-lab' {{
  insmod part_msdos
  insmod ext2
  set root=(hd0,msdos1)
  linux {GUEST_KERNEL} root=/dev/vda1 ro {GUEST_CMDLINE}
}}
"""


def mbr(part_start: int, part_sectors: int) -> bytes:
    """One bootable Linux partition in a DOS partition table (LBA only; CHS fields say 'use LBA')."""
    entry = bytes([0x80, 0xFE, 0xFF, 0xFF, 0x83, 0xFE, 0xFF, 0xFF]) + part_start.to_bytes(4, "little") \
        + part_sectors.to_bytes(4, "little")
    return entry + bytes(48) + b"\x55\xaa"


def build_grub_disk() -> Path:
    """A partitioned disk with GRUB (i386-pc) in its MBR and gap: the guest boots from its own
    /boot/grub/grub.cfg, so kho_cmdline's edit and update-grub decide the next boot's command line."""
    kdir, tree, pub = _inputs()
    grub_version = subprocess.run(["grub-mkimage", "--version"], capture_output=True, text=True,
                                  check=True).stdout.strip()
    disk = CACHE / f"disk-grub-{digest(kdir.name, tree.name, pub, DISK_RECIPE, GRUB_RECIPE, grub_version)}.img"
    if disk.exists():
        log(f"GRUB disk cached: {disk}")
        return disk
    log("assembling the GRUB-booted disk image")
    extra = {
        "etc/fstab": ("/dev/vda1 / ext4 rw,errors=remount-ro 0 1\n"
                      "debugfs /sys/kernel/debug debugfs defaults 0 0\n", 0o644),
        "etc/default/grub": (GRUB_DEFAULTS, 0o644),
        "boot/grub/grub.cfg": (GRUB_CFG, 0o444),
    }
    for mod in GRUB_MODULES.iterdir():  # what grub-install would copy: modules and their lists
        if mod.suffix in (".mod", ".lst"):
            extra[f"boot/grub/i386-pc/{mod.name}"] = (mod.read_bytes(), 0o644)
    stage = _stage(kdir / "bzImage", tree, pub, extra)
    part = CACHE / "part.tmp"
    run(["mkfs.ext4", "-q", "-F", "-L", "kho-lab", "-d", str(stage), str(part), "2G"])
    shutil.rmtree(stage)
    core = CACHE / "core.img.tmp"
    run(["grub-mkimage", "-O", "i386-pc", "-d", str(GRUB_MODULES), "-o", str(core),
         "-p", "(hd0,msdos1)/boot/grub", "biosdisk", "part_msdos", "ext2"])
    start = 2048  # 1 MiB: the gap after the MBR holds core.img
    if core.stat().st_size > (start - 1) * 512:
        raise SystemExit(f"core.img is {core.stat().st_size} bytes, more than the gap holds")
    tmp = disk.with_suffix(".tmp")
    size = part.stat().st_size
    with open(tmp, "wb") as out:
        out.write((GRUB_MODULES / "boot.img").read_bytes()[:440] + bytes(6) + mbr(start, size // 512))
        out.write(core.read_bytes())
        out.truncate(start * 512 + size)
    run(["dd", f"if={part}", f"of={tmp}", "bs=4M", f"seek={start * 512}", "oflag=seek_bytes",
         "conv=sparse,notrunc", "status=none"])
    part.unlink()
    core.unlink()
    tmp.chmod(0o600)
    tmp.rename(disk)
    return disk


def build_command(args) -> None:
    why = unavailable()
    if why:
        print(json.dumps({"skipped": why}))
        if os.environ.get("KHO_SKIP_DIR"):  # tests/utils/tier.py's table: skipped, with the reason
            Path(os.environ["KHO_SKIP_DIR"]).mkdir(parents=True, exist_ok=True)
            (Path(os.environ["KHO_SKIP_DIR"]) / "lab-build").write_text(f"the lab cannot run here: {why}\n")
        return
    info = build()
    if args.snapshot:
        accel = "kvm" if kvm_works(info["kernel"]) else "tcg"
        info["snapshot"] = str(build_snapshot(info, accel, command("up").memory, BASE_CMDLINE))
    print(json.dumps(info))


def build(_args=None, flavour: str = "bookworm") -> dict:
    CACHE.mkdir(mode=0o700, parents=True, exist_ok=True)
    CACHE.chmod(0o700)  # root file systems, disks and the lab's SSH key
    with locked(CACHE / ".build.lock"):  # two builds in one tree corrupt it: the second one waits
        disk = build_disk(flavour)
    kdir = kernel_dir()
    info = json.loads((kdir / "build.json").read_text())
    return {"disk": str(disk), "kernel": str(kdir / "bzImage"), **info}


# The kernel's own live update selftests (a peer's test suite), built from the lab's source tree: static, so
# that they run on any guest.  Stage 1 makes sessions and forks a holder; after the kexec, `-s 2` checks them.
SELFTESTS = ("luo_kexec_simple", "luo_multi_session")


def build_selftests(_args=None) -> dict:
    deb = fetch_source()
    out = CACHE / f"selftests-{digest(deb.name, *SELFTESTS)}"
    if not all((out / t).exists() for t in SELFTESTS):
        src = source_tree(deb)
        tmp = out.with_name(out.name + ".tmp")
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(parents=True)
        log("building the kernel's LUO selftests")
        run(["make", "-s", "-C", str(src), f"O={tmp / 'obj'}", "headers_install", f"INSTALL_HDR_PATH={tmp / 'hdr'}"],
            stdout=subprocess.DEVNULL)
        lu = src / "tools/testing/selftests/liveupdate"
        for test in SELFTESTS:
            run(["gcc", "-static", "-O2", "-Wall", "-Wno-unused-function", f"-I{tmp / 'hdr/include'}",
                 f"-I{lu / 'lib/include'}", f"-I{src / 'tools/testing/selftests'}", str(lu / f"{test}.c"),
                 str(lu / "lib/lu_utils.c"), "-o", str(tmp / test)])
        shutil.rmtree(tmp / "obj")
        shutil.rmtree(tmp / "hdr")
        shutil.rmtree(out, ignore_errors=True)
        tmp.rename(out)
    result = {"selftests": {t: str(out / t) for t in SELFTESTS}, "source": deb.name}
    print(json.dumps(result))
    return result


# ---------------------------------------------------------------- guests

def run_dir(name: str) -> Path:
    return CACHE / "run" / name


@contextlib.contextmanager
def locked(path: Path):
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        yield


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


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
    cpu = next((line for line in Path("/proc/cpuinfo").read_text().splitlines() if line.startswith("model name")), "")
    verdict = CACHE / "kvm-probe" / digest(Path(kernel).read_bytes(), os.uname().release, cpu)
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


def snapshot_path(info: dict, accel: str, memory: int, cmdline: str) -> Path:
    """The cached booted-guest snapshot for these inputs (QEMU, CPU and accelerator included)."""
    qemu = subprocess.run(["qemu-system-x86_64", "--version"], capture_output=True, text=True, check=True).stdout
    cpu = next((line for line in Path("/proc/cpuinfo").read_text().splitlines() if line.startswith("model name")), "")
    return CACHE / f"snap-{digest(info['disk'], info['kernel'], accel, str(memory), cmdline, qemu, cpu, SNAPSHOT_RECIPE)}.qcow2"


def build_snapshot(info: dict, accel: str, memory: int, cmdline: str, timeout: float = 300.0) -> Path:
    """Boot one guest cold, let systemd finish, save RAM, devices and disk as one internal snapshot.

    A restore (-loadvm) then takes about a second where a cold TCG boot takes 12 to 26 s. Guests
    restored from one snapshot share its boot id and machine id until their first jump.
    """
    snap = snapshot_path(info, accel, memory, cmdline)
    if snap.exists():
        return snap
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
    return snap


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


SSH_OPTIONS = ["StrictHostKeyChecking no", "UserKnownHostsFile /dev/null", "LogLevel ERROR"]


def write_inventory(rd: Path, guests: list[dict]) -> Path:
    """inventory.ini (direct: address and port in the inventory), and the ways fleets are really reached.

    ssh_config names each guest (an alias: HostName and Port only there) and, from the second guest on,
    `<name>-via-<first>`: the same guest behind a ProxyJump bastion, the first guest (which reaches the
    others' forwarded ports at QEMU's host address 10.0.2.2).  inventory-alias.ini uses those names with
    `-F ssh_config` and nothing else: no address, no port.  The inventories set no keep-alives: the jump
    bounds its own waits.
    """
    key = ssh_key()
    common = [
        "ansible_user=root", f"ansible_ssh_private_key_file={key}",
        "ansible_python_interpreter=/usr/bin/python3",
        "ansible_pipelining=true",  # one SSH command per module instead of mkdir, put, chmod, run
        f"kho_lab_kernel={GUEST_KERNEL}",
    ]
    lines = ["[kho_lab]", *(f"{g['name']} ansible_host=127.0.0.1 ansible_port={g['port']}" for g in guests),
             "", "[kho_lab:vars]", *common,
             "ansible_ssh_common_args='-o StrictHostKeyChecking=no -o UserKnownHostsFile=/dev/null -o LogLevel=ERROR'",
             ""]
    inv = rd / "inventory.ini"
    inv.write_text("\n".join(lines))
    config, alias_hosts = [], []
    for i, g in enumerate(guests):
        config += [f"Host {g['name']}", "    HostName 127.0.0.1", f"    Port {g['port']}", "    User root",
                   f"    IdentityFile {key}", *(f"    {o}" for o in SSH_OPTIONS), ""]
        alias_hosts.append(g["name"] if i == 0 else f"{g['name']}-via-{guests[0]['name']}")
        if i:
            config += [f"Host {alias_hosts[-1]}", "    HostName 10.0.2.2", f"    Port {g['port']}", "    User root",
                       f"    ProxyJump {guests[0]['name']}", f"    IdentityFile {key}",
                       *(f"    {o}" for o in SSH_OPTIONS), ""]
    (rd / "ssh_config").write_text("\n".join(config))
    (rd / "inventory-alias.ini").write_text("\n".join([
        "[kho_lab]", *alias_hosts, "", "[kho_lab:vars]", *common,
        f"ansible_ssh_common_args='-F {rd / 'ssh_config'}'", ""]))
    return inv


def up(args) -> dict:
    info = build(flavour=args.flavour)
    if args.boot == "grub":
        if args.append:
            raise SystemExit("--append needs --boot kernel: a GRUB-booted guest takes its command line from "
                             "its own /etc/default/grub")
        info["disk"] = str(build_grub_disk())
    rd = run_dir(args.name)
    accel = args.accel
    if accel == "auto":
        accel = "kvm" if kvm_works(info["kernel"]) else "tcg"
    cmdline = " ".join([BASE_CMDLINE, *args.append]) if args.boot == "kernel" else None
    restore = None
    if args.boot == "kernel" and not args.cold and os.environ.get("KHO_LAB_SNAPSHOT", "1") != "0":
        restore = str(build_snapshot(info, accel, args.memory, cmdline, max(args.timeout, 300.0)))
    with locked(CACHE / "run" / ".lock"):
        if (rd / "guests.json").exists():
            down(args)
        rd.mkdir(parents=True, exist_ok=True)
        guests = []
        for i in range(args.count):
            name = f"{args.name}-{i}"
            overlay = rd / f"{name}.qcow2"
            overlay.unlink(missing_ok=True)
            if not restore:
                run(["qemu-img", "create", "-q", "-f", "qcow2", "-F", "raw", "-b", info["disk"], str(overlay)])
                overlay.chmod(0o600)
            guests.append({
                "name": name, "port": 0, "accel": accel, "memory": args.memory,
                "boot": args.boot, "kernel": info["kernel"], "cmdline": cmdline, "restore": restore,
                "overlay": str(overlay), "serial": str(rd / f"{name}.serial.log"),
                "pidfile": str(rd / f"{name}.pid"), "monitor": str(rd / f"{name}.mon"),
                "no_reboot": args.no_reboot,
            })
        (rd / "guests.json").write_text(json.dumps(guests, indent=1))
    for g in guests:
        g["boot_seconds"] = boot_guest(g, args.no_reboot, args.timeout)
        how = "restored from the snapshot" if g["restore"] else "cold boot"
        log(f"{g['name']}: SSH on 127.0.0.1:{g['port']} after {g['boot_seconds']} s ({accel}, {how})")
    (rd / "guests.json").write_text(json.dumps(guests, indent=1))
    inv = write_inventory(rd, guests)
    log(f"inventory: {inv}")
    result = {"inventory": str(inv), "inventory_alias": str(rd / "inventory-alias.ini"),
              "ssh_config": str(rd / "ssh_config"), "guests": guests, **info}
    print(json.dumps(result))
    return result


def down(args) -> None:
    rd = run_dir(args.name)
    f = rd / "guests.json"
    if not f.exists():
        return
    for g in json.loads(f.read_text()):
        stop_guest(g)
        Path(g["overlay"]).unlink(missing_ok=True)
    shutil.rmtree(rd, ignore_errors=True)
    log(f"lab {args.name} stopped")


def ssh_argv(guest: dict, *command: str) -> list[str]:
    return ["ssh", "-i", str(ssh_key()), "-p", str(guest["port"]), "-o", "StrictHostKeyChecking=no",
            "-o", "UserKnownHostsFile=/dev/null", "-o", "LogLevel=ERROR", "-o", "ConnectTimeout=5",
            "-o", "BatchMode=yes", "root@127.0.0.1", *command]


def roundtrip(args) -> dict:
    """The floor: load with kexec -s, jump detached, poll the SSH banner every 50 ms, one command."""
    guests = json.loads((run_dir(args.name) / "guests.json").read_text())
    g = guests[0]
    old = subprocess.run(ssh_argv(g, "cat /proc/sys/kernel/random/boot_id"), capture_output=True, text=True,
                         check=True).stdout.strip()
    run(ssh_argv(g, f"kexec -s -l {GUEST_KERNEL} --reuse-cmdline && "
                    "systemd-run --quiet --on-active=1 --timer-property=AccuracySec=50ms kexec -e"))
    started = time.monotonic()
    while ssh_banner(g["port"], 0.5):  # the old kernel, until it goes
        time.sleep(0.05)
    while not ssh_banner(g["port"], 0.5):
        if time.monotonic() - started > args.timeout:
            raise SystemExit(f"no SSH banner within {args.timeout} s")
        time.sleep(0.05)
    banner = time.monotonic() - started
    new = subprocess.run(ssh_argv(g, "cat /proc/sys/kernel/random/boot_id"), capture_output=True, text=True,
                         check=True).stdout.strip()
    total = time.monotonic() - started
    if new == old:
        raise SystemExit("the boot id did not change")
    result = {"banner_seconds": round(banner, 2), "roundtrip_seconds": round(total, 2)}
    log(f"kexec round trip: SSH banner after {result['banner_seconds']} s, "
        f"first command on the new boot after {result['roundtrip_seconds']} s")
    print(json.dumps(result))
    return result


def status(args) -> None:
    f = run_dir(args.name) / "guests.json"
    guests = json.loads(f.read_text()) if f.exists() else []
    for g in guests:
        g["running"] = pid_of(g) is not None
    print(json.dumps(guests, indent=1))


def main(argv: list[str] | None = None) -> None:
    args = parser().parse_args(argv)
    args.func(args)


def command(*argv: str) -> argparse.Namespace:
    """The arguments of one lab command, with the command line's defaults: for callers in Python."""
    return parser().parse_args(list(argv))


def parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="cmd", required=True)
    sub.add_parser("setup-host").set_defaults(func=setup_host)
    p = sub.add_parser("build")
    p.set_defaults(func=build_command)
    p.add_argument("--snapshot", action="store_true", help="also the booted-guest snapshot that `up` restores")
    p = sub.add_parser("variant", help="a target kernel from the same source with part of live update left out")
    p.add_argument("variant", choices=sorted(VARIANTS))
    p.set_defaults(func=lambda a: print(json.dumps({"bzImage": str(build_kernel(a.variant) / "bzImage")})))
    sub.add_parser("selftests", help="build the kernel's LUO selftests from the lab's source").set_defaults(
        func=build_selftests)
    sub.add_parser("unavailable", help="print why the lab cannot run here (nothing when it can)").set_defaults(
        func=lambda a: print(unavailable() or ""))
    for name, func in (("up", up), ("down", down), ("status", status), ("roundtrip", roundtrip)):
        p = sub.add_parser(name)
        p.set_defaults(func=func)
        p.add_argument("--name", default=os.environ.get("KHO_LAB_NAME", "lab"))
        if name == "roundtrip":
            p.add_argument("--timeout", type=float, default=120.0)
        if name == "up":
            p.add_argument("-n", "--count", type=int, default=1)
            p.add_argument("--accel", choices=("auto", "tcg", "kvm"), default="auto")
            p.add_argument("--memory", type=int, default=1024)
            p.add_argument("--timeout", type=float, default=120.0)
            p.add_argument("--cold", action="store_true",
                           help="boot cold instead of restoring the booted snapshot (also KHO_LAB_SNAPSHOT=0)")
            p.add_argument("--no-reboot", action="store_true",
                           help="make a guest reset stop QEMU (for guests that must not come back)")
            p.add_argument("--append", action="append", default=[],
                           help="extra kernel parameters")
            p.add_argument("--flavour", choices=sorted(FLAVOURS), default="bookworm",
                           help="the guest's root fs: bookworm, or sid (systemd 262, a service with a preserved "
                                "fd store, for live update)")
            p.add_argument("--boot", choices=("kernel", "grub"), default="kernel",
                           help="kernel: QEMU loads the lab kernel with KHO on; grub: a real GRUB boots it "
                                "from the disk's MBR with KHO off, so the boot loader decides each boot")
    return ap


if __name__ == "__main__":
    main()

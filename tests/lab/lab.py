"""The kexec.kho lab: a real KHO kernel and a Debian guest in QEMU.

    lab.py setup-host        install what the lab needs from Debian (idempotent)
    lab.py install PKG...    install these Debian packages where missing (the unit tests' dtc)
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

# The lab in parts, each of one concern: lab_common (the cache, the guests' command line, the recipes' versions
# and the helpers every part uses), lab_build (host packages, kernel source, kernel, variants, selftests),
# lab_flavours (what is in a guest), lab_disks (root fs, disks, the GRUB disk), lab_guests (QEMU, SSH, boot,
# stop), lab_snapshot (the KVM probe and the booted snapshot), lab_inventory (the inventories).  This file is the
# command line and its commands (build, up, down, status, roundtrip), and the module callers import (bench/lab_bench.py,
# the lab's tests).  Standard library only: it runs before the test venv exists.

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import time
from pathlib import Path

# Every name the lab had when it was one file stays importable from here (`import lab; lab.up(...)`).
# pylint: disable=unused-import
from lab_build import (FORMATS, HOST_PACKAGES, install_command, SELFTESTS, VARIANTS, build_format,  # noqa: F401
                       build_kernel, build_package,
                       build_selftests, check_config, fetch_source, kernel_dir, setup_host, source_tree, unavailable)
from lab_common import (BASE_CMDLINE, BUILD_LOCK, CACHE, DEBIAN_SUITE, DISK_RECIPE, FRAGMENT, GRUB_RECIPE,  # noqa: F401
                        GUEST_CMDLINE, GUEST_KERNEL, HERE, KERNEL_RECIPE, MIRROR, RELEASES, RESERVE_MEM, ROOTFS_RECIPE,
                        SNAPSHOT, SNAPSHOT_RECIPE, SOURCE_PACKAGE, SOURCE_SUITE, digest, locked, log, run,
                        run_dir, ssh_key)
from lab_disks import (GRUB_CFG, GRUB_DEFAULTS, GRUB_MODULES, build, build_disk,  # noqa: F401
                       build_grub_disk, build_rootfs, mbr)
from lab_flavours import CACHE_SERVICE, CACHE_UNIT, FLAVOURS, GUEST_PACKAGES  # noqa: F401
from lab_guests import (PANIC, boot_guest, free_port, monitor, pid_of, qemu_argv, ssh_argv,  # noqa: F401
                        ssh_banner, start_qemu, stop_guest, wait_ssh)
from lab_inventory import SSH_OPTIONS, write_inventory  # noqa: F401
from lab_snapshot import build_snapshot, kvm_works, snapshot_path  # noqa: F401
# pylint: enable=unused-import


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


# Builds into the cache one at a time (two test workers may ask for one artefact at once): up's build() and
# GRUB disk, the variant kernels and the selftests wait for the build lock; a snapshot has its own lock.
def variant_command(args) -> None:
    with locked(BUILD_LOCK):
        kdir = build_kernel(args.variant)
    print(json.dumps({"bzImage": str(kdir / "bzImage")}))


def release_command(args) -> None:
    """Another release's kernel (#35): the lab's recipe (everything built in, no initrd), or --packaged: modular, as
    Debian packages for the guest's dpkg."""
    with locked(BUILD_LOCK):
        if args.packaged:
            print(json.dumps(build_package(args.release)))
            return
        kdir = build_kernel(release=args.release)
    print(json.dumps({"bzImage": str(kdir / "bzImage"), **json.loads((kdir / "build.json").read_text())}))


def format_command(args) -> None:
    """The lab kernel writing and accepting the next version of one format (#35)."""
    with locked(BUILD_LOCK):
        kdir = build_format(args.format)
    print(json.dumps({"bzImage": str(kdir / "bzImage"), **json.loads((kdir / "build.json").read_text())}))


def selftests_command(_args) -> dict:
    with locked(BUILD_LOCK):
        return build_selftests()


def up(args) -> dict:
    info = build(flavour=args.flavour)
    if args.boot == "grub":
        if args.append:
            raise SystemExit("--append needs --boot kernel: a GRUB-booted guest takes its command line from "
                             "its own /etc/default/grub")
        with locked(BUILD_LOCK):  # its staging shares the cache with the other builds
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
    p = sub.add_parser("install", help="install these Debian packages where missing (one apt-get at a time)")
    p.add_argument("packages", nargs="+")
    p.set_defaults(func=install_command)
    p = sub.add_parser("build")
    p.set_defaults(func=build_command)
    p.add_argument("--snapshot", action="store_true", help="also the booted-guest snapshot that `up` restores")
    p = sub.add_parser("variant", help="a target kernel from the same source with part of live update left out")
    p.add_argument("variant", choices=sorted(VARIANTS))
    p.set_defaults(func=variant_command)
    p = sub.add_parser("release", help="a kernel of another release, from its own Debian source package")
    p.add_argument("release", choices=sorted(RELEASES))
    p.add_argument("--packaged", action="store_true",
                   help="modular (disk and root fs drivers as modules), built as Debian packages (bindeb-pkg)")
    p.set_defaults(func=release_command)
    p = sub.add_parser("format", help="the lab kernel patched to write and accept the next version of one format")
    p.add_argument("format", choices=sorted(FORMATS))
    p.set_defaults(func=format_command)
    sub.add_parser("selftests", help="build the kernel's LUO selftests from the lab's source").set_defaults(
        func=selftests_command)
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

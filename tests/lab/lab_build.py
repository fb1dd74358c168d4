"""The lab's builds: the host's packages, the kernel's source (Debian's linux-source package, from an apt list of
its own), the lab kernel and its variants, and the kernel's own LUO selftests.  Each is cached under the lab's
cache, keyed by what made it."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import time
from pathlib import Path

from lab_common import (CACHE, locked, FRAGMENT, KERNEL_RECIPE, MIRROR, SOURCE_PACKAGE, SOURCE_SUITE, digest, log,
                        run)

HOST_PACKAGES = [
    "qemu-system-x86", "qemu-utils", "debootstrap", "e2fsprogs", "openssh-client",
    "build-essential", "bc", "flex", "bison", "libelf-dev", "libssl-dev", "cpio",
    "xz-utils", "device-tree-compiler", "grub-common", "grub-pc-bin", "rsync", "kmod", "chromium",
]


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
    install(HOST_PACKAGES)


def install(packages: list[str]) -> None:
    """apt-get install what is missing of ``packages``, one install at a time: the lab chain's set-up and the unit
    tests' prerequisite (dtc) may ask at once, and a second apt-get would fail on dpkg's lock."""
    def missing() -> list[str]:
        return [p for p in packages
                if subprocess.run(["dpkg-query", "-W", "-f=${Status}", p],
                                  capture_output=True, text=True, check=False).stdout != "install ok installed"]
    if not missing():
        log("host packages present")
        return
    with locked(CACHE / "apt.lock"):
        wanted = missing()
        if wanted:
            log(f"installing from Debian: {' '.join(wanted)}")
            env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
            run(["apt-get", "update", "-qq"], env=env)
            run(["apt-get", "install", "-y", "-qq", "--no-install-recommends", *wanted], env=env)


def install_command(args) -> None:
    if os.geteuid() != 0 or not shutil.which("apt-get"):
        log(f"not installing {' '.join(args.packages)}: that needs root on a Debian host (apt-get)")
        return
    install(args.packages)


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


# ---------------------------------------------------------------- the kernel's LUO selftests

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

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

from lab_common import CACHE, FRAGMENT, KERNEL_RECIPE, LAB_RELEASE, MIRROR, RELEASES, digest, locked, log, run

HOST_PACKAGES = [
    "qemu-system-x86", "qemu-utils", "debootstrap", "e2fsprogs", "openssh-client",
    "build-essential", "bc", "flex", "bison", "libelf-dev", "libssl-dev", "cpio",
    "xz-utils", "device-tree-compiler", "grub-common", "grub-pc-bin", "rsync", "kmod", "chromium",
    "dpkg-dev", "fakeroot", "debhelper", "libdw-dev",  # make bindeb-pkg (its build-deps): the packaged kernel of #35
]


# ---------------------------------------------------------------- host set-up

def _apt_dir(suite: str) -> Path:
    """The apt list of one suite's kernel source: the lab's own under apt/ (as it always was), others beside it."""
    return CACHE / ("apt" if suite == RELEASES[LAB_RELEASE][1] else f"apt-{suite}")


def _apt_opts(d: Path) -> list[str]:
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


def fetch_source(release: str = LAB_RELEASE) -> Path:
    """Download a release's kernel source package from an apt list of its suite's own, the system untouched."""
    package, suite = RELEASES[release]
    d = _apt_dir(suite)
    (d / "lists" / "partial").mkdir(parents=True, exist_ok=True)
    debs = sorted(d.glob(f"{package}_*.deb"))
    if debs:
        return debs[-1]
    (d / "sources.list").write_text(
        f"deb [signed-by=/usr/share/keyrings/debian-archive-keyring.gpg] {MIRROR} {suite} main\n")
    log(f"fetching {package} from {suite}")
    run(["apt-get", *_apt_opts(d), "update", "-qq"])
    run(["apt-get", *_apt_opts(d), "download", f"{package}/{suite}"], cwd=d)
    return sorted(d.glob(f"{package}_*.deb"))[-1]


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


def kernel_dir(variant: str | None = None, release: str = LAB_RELEASE) -> Path:
    deb = fetch_source(release)
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


def configure(src: Path, build: Path, extra: str | None) -> list:
    """The lab's recipe in ``build``: tinyconfig, kvm_guest.config, the lab's fragment, then ``extra``; the make
    command that builds in it."""
    build.mkdir(parents=True, exist_ok=True)
    log(f"configuring kernel in {build}")
    make = ["make", "-C", str(src), f"O={build}", f"-j{os.cpu_count() or 1}", "-s"]
    run([*make, "tinyconfig"])
    fragments = [str(src / "kernel/configs/kvm_guest.config"), str(FRAGMENT)]
    if extra:
        (build / "extra.config").write_text(extra)
        fragments.append(str(build / "extra.config"))
    run([str(src / "scripts/kconfig/merge_config.sh"), "-m", "-O", str(build), str(build / ".config"), *fragments],
        stdout=subprocess.DEVNULL)
    run([*make, "olddefconfig"])
    return make


def build_kernel(variant: str | None = None, release: str = LAB_RELEASE) -> Path:
    out = kernel_dir(variant, release)
    if (out / "bzImage").exists():
        log(f"kernel cached: {out / 'bzImage'}")
        return out
    src = source_tree(fetch_source(release))
    build = out.with_name(out.name + ".build")
    started = time.monotonic()
    make = configure(src, build, VARIANTS[variant] if variant else None)
    check_config((build / ".config").read_text(), variant)
    log(f"building bzImage of {release} (minutes)")
    run([*make, "bzImage"])
    return _keep_kernel(build, out, started)


def _keep_kernel(build: Path, out: Path, started: float) -> Path:
    """The built bzImage, its config and build.json into the cache directory ``out``; the build tree removed."""
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


# Targets whose formats moved on (#35): no reachable release writes another version of a format than 7.3.4 does, so
# the lab's source is patched to write and accept the next version of one format at a time, as a future release
# would; the target check must refuse each before any change, naming both sides.  format -> (file, old, new).
FORMATS = {
    "luo-v6": ("include/linux/kho/abi/luo.h", '"luo-v5"', '"luo-v6"'),
    "memfd-v3": ("include/linux/kho/abi/memfd.h", '"memfd-v2"', '"memfd-v3"'),
    "kho-v5": ("include/linux/kho/abi/kexec_handover.h", '#define KHO_FDT_COMPATIBLE "kho-v4"',
               '#define KHO_FDT_COMPATIBLE "kho-v5"'),
    "reserve-mem-v2": ("include/linux/kho/abi/memblock.h", '"reserve-mem-v1"', '"reserve-mem-v2"'),
}


def patched_tree(src: Path, fmt: str) -> Path:
    """The lab's source with one format's version moved on: hard links of the tree, the one header written anew."""
    tree = src.with_name(f"{src.name}-{fmt}")
    if (tree / "Makefile").exists():
        return tree
    tmp = tree.with_name(tree.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    run(["cp", "-al", str(src), str(tmp)])
    name, old, new = FORMATS[fmt]
    text = (tmp / name).read_text()
    if old not in text:
        raise SystemExit(f"{name} no longer has {old}: the {fmt} patch does not apply")
    (tmp / name).unlink()  # a hard link: the lab's own tree must stay as it is
    (tmp / name).write_text(text.replace(old, new))
    tmp.rename(tree)
    return tree


def format_dir(fmt: str) -> Path:
    return CACHE / f"kernel-{digest(fetch_source().name, FRAGMENT.read_bytes(), KERNEL_RECIPE, repr(FORMATS[fmt]))}"


def build_format(fmt: str) -> Path:
    """The lab kernel (7.3.4, the lab's recipe) writing and accepting ``fmt`` instead of its own version."""
    out = format_dir(fmt)
    if (out / "bzImage").exists():
        return out
    src = patched_tree(source_tree(fetch_source()), fmt)
    build = out.with_name(out.name + ".build")
    started = time.monotonic()
    make = configure(src, build, None)
    log(f"building the lab kernel with {fmt} (minutes)")
    run([*make, "bzImage"])
    return _keep_kernel(build, out, started)


# A kernel as a distribution ships it (#35): the disk and root file system drivers as modules, so that it boots only
# with its initramfs; built as Debian packages (make bindeb-pkg) for the guest's dpkg, whose initramfs-tools hook
# then makes /boot/initrd.img-REL beside /boot/vmlinuz-REL, as an `apt upgrade` leaves them.
PACKAGED = """\
CONFIG_MODULES=y
CONFIG_MODULE_UNLOAD=y
CONFIG_VIRTIO_BLK=m
CONFIG_EXT4_FS=m
CONFIG_BLK_DEV_INITRD=y
CONFIG_RD_GZIP=y
CONFIG_RD_ZSTD=y
"""
PACKAGED_SUFFIX = "-pkg"  # LOCALVERSION: the packaged build's release is REL-pkg, beside the built-in REL


def build_package(release: str) -> dict:
    """linux-image-REL-pkg's .deb, modular, from ``release``'s source: {"deb", "release", "build_seconds"}."""
    deb = fetch_source(release)
    out = CACHE / f"package-{digest(deb.name, FRAGMENT.read_bytes(), KERNEL_RECIPE, PACKAGED, PACKAGED_SUFFIX)}"
    if not (out / "build.json").exists():
        src = source_tree(deb)
        build = out.with_name(out.name + ".build")
        started = time.monotonic()
        make = configure(src, build, PACKAGED + f'CONFIG_LOCALVERSION="{PACKAGED_SUFFIX}"\n')
        final = (build / ".config").read_text()
        if any(f"{opt}=m\n" not in final for opt in ("CONFIG_VIRTIO_BLK", "CONFIG_EXT4_FS")):
            raise SystemExit("the packaged kernel's config lost its modular disk or root file system driver")
        log(f"building the packaged, modular {release} kernel (make bindeb-pkg; minutes)")
        run([*make, "LOCALVERSION=", "KDEB_PKGVERSION=1kho", "bindeb-pkg"])
        kernel_release = (build / "include/config/kernel.release").read_text().strip()
        image = next(build.parent.glob(f"linux-image-{kernel_release}_*.deb"))
        tmp = out.with_name(out.name + ".tmp")
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir()
        shutil.move(str(image), tmp / image.name)
        for junk in build.parent.glob("linux-*_1kho_*"):  # headers, libc-dev, the .buildinfo/.changes
            junk.unlink()
        (tmp / "build.json").write_text(json.dumps({"release": kernel_release, "deb": image.name,
                                                    "build_seconds": round(time.monotonic() - started, 1)}))
        shutil.rmtree(build)
        tmp.rename(out)
    info = json.loads((out / "build.json").read_text())
    return {**info, "deb": str(out / info["deb"])}


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

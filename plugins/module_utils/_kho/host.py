# Copyright (c) kexec.kho contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
"""The running kernel's KHO interface, read from debugfs, sysfs and procfs.  Not a public API.

Every path the collection touches on a host is spelled once, in paths.py; the roots
are parameters so that tests can point them at simulated trees.
"""

from __future__ import annotations

import errno
import gzip
import os
import re

from ansible_collections.kexec.kho.plugins.module_utils._kho import paths

MAX_READ = 16 << 20  # no debugfs blob comes near this; a larger read is refused
# The scratch area's files under kho/out, newest spelling last: 7.4 renames the area "bootmem" ("kho: rename KHO
# scratch to KHO bootmem"); the new names are the KHO reference's (section 8), not yet read in 7.4 sources here.
SCRATCH_FILES = (("scratch_phys", "scratch_len"), ("bootmem_phys", "bootmem_len"))
KHO_SYMBOLS = (b" kho_populate\n", b" kho_init\n", b" kho_is_enabled\n")
GENERATIONS = ("none", "finalize", "live", "unknown")
LOG_PATTERN = r"KHO|kho|reserve_mem|reserve-mem|memory reservation|FDT 'memblock'|ramoops:|luo:"
MAX_LOG_LINES = 4096  # matching kernel records kept, at most
KMSG_RECORD = 8192  # bytes of one /dev/kmsg record, at most (the kernel's own is 1 KiB and its dictionary)
KMSG_HEAD = re.compile(r"(\d{1,10}),\d{1,20},(\d{1,20}),[^;]{0,64}")
LOG_STAMP = re.compile(r"\[ {0,12}(\d{1,12})\.(\d{1,9})\] ")


class NeedsRoot(Exception):
    """A read or write the current user may not do."""

    def __init__(self, path: str):
        super().__init__(f"permission denied on {path}: KHO state is only readable by root, "
                         "run the task with become: true")
        self.path = path


class KhoHost:
    def __init__(self, debugfs_root=paths.DEBUGFS, sysfs_root=paths.SYSFS, procfs_root=paths.PROCFS, devfs_root=paths.DEVFS):
        self.debugfs = debugfs_root.rstrip("/") or "/"
        self.sysfs = sysfs_root.rstrip("/") or "/"
        self.procfs = procfs_root.rstrip("/") or "/"
        self.devfs = devfs_root.rstrip("/") or "/"
        self.kho = os.path.join(self.debugfs, paths.KHO)
        self.out_dir = os.path.join(self.kho, "out")
        self.in_dir = os.path.join(self.kho, "in")
        self.finalize_path = os.path.join(self.out_dir, "finalize")
        self.kexec_loaded_path = os.path.join(self.sysfs, paths.KEXEC_LOADED)

    # ------------------------------------------------------------ reading

    @staticmethod
    def exists(path: str) -> bool:
        try:
            os.stat(path)
            return True
        except FileNotFoundError:
            return False
        except PermissionError as exc:
            raise NeedsRoot(path) from exc

    def read_bytes(self, path: str, limit: int = MAX_READ) -> bytes | None:
        """Read to EOF: debugfs blobs report size 0, so st_size is never trusted."""
        chunks, total = [], 0
        try:
            with open(path, "rb", buffering=0) as fh:
                while True:
                    chunk = fh.read(65536)
                    if not chunk:
                        break
                    total += len(chunk)
                    if total > limit:
                        raise OSError(errno.EFBIG, f"{path} is larger than {limit} bytes")
                    chunks.append(chunk)
        except FileNotFoundError:
            return None
        except PermissionError as exc:
            raise NeedsRoot(path) from exc
        return b"".join(chunks)

    def read_text(self, path: str) -> str | None:
        data = self.read_bytes(path)
        return None if data is None else data.decode("utf-8", "replace")

    def blobs(self, directory: str) -> dict:
        """{name: bytes} of the files in a sub_fdts directory."""
        try:
            names = sorted(os.listdir(directory))
        except FileNotFoundError:
            return {}
        except PermissionError as exc:
            raise NeedsRoot(directory) from exc
        found = {}
        for name in names:
            data = self.read_bytes(os.path.join(directory, name))
            if data is not None:
                found[name] = data
        return found

    # ------------------------------------------------------------ state

    def debugfs_mounted(self) -> bool:
        mounts = self.read_text(os.path.join(self.procfs, "mounts")) or ""
        return any(f.split()[1:3] == [self.debugfs, "debugfs"] for f in mounts.splitlines() if len(f.split()) > 2)

    def generation(self) -> str:
        """none, finalize or live, by what exists (see the reference's generation table)."""
        if not self.exists(self.kho):
            return "none"
        if self.exists(self.finalize_path):
            return "finalize"
        if self.exists(self.out_dir):
            return "live"
        return "unknown"

    def finalized(self) -> bool | None:
        text = self.read_text(self.finalize_path)
        return None if text is None else text.strip() not in ("", "0")

    def write_finalize(self, value: int) -> None:
        """Raises OSError with the kernel's errno (EEXIST, ENOENT, EINVAL...)."""
        try:
            with open(self.finalize_path, "w") as fh:
                fh.write(f"{value}\n")
        except PermissionError as exc:
            raise NeedsRoot(self.finalize_path) from exc

    def scratch(self) -> list:
        """The scratch (7.4: bootmem) areas, from whichever pair of files this kernel has."""
        for phys_name, len_name in SCRATCH_FILES:
            phys = self.read_text(os.path.join(self.out_dir, phys_name))
            if phys is not None:
                lens = self.read_text(os.path.join(self.out_dir, len_name)) or ""
                return [{"phys": int(p, 16), "len": int(n, 16)} for p, n in zip(phys.split(), lens.split())]
        return []

    def reserve_mem_param(self) -> list | None:
        """The names memblock/reserve_mem_param lists ("NAME\t\t(1.00 MiB)" per line), or None where it is absent."""
        text = self.read_text(os.path.join(self.debugfs, "memblock", "reserve_mem_param"))
        return None if text is None else [line.split()[0] for line in text.splitlines() if line.split()]

    def kexec_loaded(self) -> bool | None:
        text = self.read_text(self.kexec_loaded_path)
        return None if text is None else text.strip() == "1"

    def boot_id(self) -> str | None:
        text = self.read_text(os.path.join(self.procfs, "sys", "kernel", "random", "boot_id"))
        return None if text is None else text.strip()

    def release(self) -> str | None:
        text = self.read_text(os.path.join(self.procfs, "sys", "kernel", "osrelease"))
        return None if text is None else text.strip()

    def cmdline(self) -> str:
        return (self.read_text(os.path.join(self.procfs, "cmdline")) or "").strip()

    def lockdown(self) -> str | None:
        text = self.read_text(os.path.join(self.sysfs, "kernel", "security", "lockdown"))
        m = re.search(r"\[(\w+)\]", text or "")
        return m.group(1) if m else None

    def kernel_config(self) -> dict | None:
        """KHO options from /proc/config.gz, when the kernel exposes its config."""
        path = os.path.join(self.procfs, "config.gz")
        raw = self.read_bytes(path)
        if raw is None:
            return None
        text = gzip.decompress(raw).decode("utf-8", "replace")
        return dict(re.findall(r"^(CONFIG_KEXEC_HANDOVER\w*|CONFIG_LIVEUPDATE)=(\w+)$", text, re.M))

    def has_kho_symbols(self) -> bool | None:
        """True when kallsyms names KHO's functions: built in, even if not enabled on this boot."""
        try:
            with open(os.path.join(self.procfs, "kallsyms"), "rb") as fh:
                for line in fh:
                    if line.endswith(KHO_SYMBOLS):
                        return True
        except FileNotFoundError:
            return None
        except PermissionError:
            return None
        return False

    def kernel_log(self, pattern: str = LOG_PATTERN) -> list | None:
        """Matching records of the kernel's own facility, read from /dev/kmsg without blocking (at most MAX_LOG_LINES).

        A process may write to /dev/kmsg too; the kernel then stores its record under a user facility (never 0),
        so a record of another facility is not the kernel's word and is left out."""
        rx = re.compile(pattern)
        path = os.path.join(self.devfs, "kmsg")
        try:
            fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK)
        except FileNotFoundError:
            return None
        except PermissionError:
            return None
        lines: list = []
        rest = b""  # /dev/kmsg gives one record a read; a file (the tests' trees) gives many, cut anywhere
        try:
            while len(lines) < MAX_LOG_LINES:
                try:
                    chunk = os.read(fd, 8192)
                except BlockingIOError:
                    break
                except OSError as exc:
                    if exc.errno == errno.EPIPE:  # overwritten records: carry on
                        continue
                    raise
                if not chunk:
                    break
                *records, rest = (rest + chunk).split(b"\n")
                rest = rest if len(rest) <= KMSG_RECORD else b""  # no record is that long: not one
                found = (kernel_record(r) for r in records)
                lines += [line for line in found if line is not None and rx.search(log_message(line))]
        finally:
            os.close(fd)
        return lines[:MAX_LOG_LINES]


def kernel_record(record: bytes) -> str | None:
    """One /dev/kmsg record ("PRI,SEQ,USEC,FLAGS;message"; its " KEY=value" lines are not records) as
    "[    s.us] message", or None where it is not the kernel's own (its facility, PRI >> 3, is not 0) or not one."""
    head, sep, message = record.decode("utf-8", "replace").partition(";")
    m = KMSG_HEAD.fullmatch(head)
    if not sep or not m or int(m.group(1)) >> 3:
        return None
    usec = int(m.group(2))
    return f"[{usec // 1000000:5d}.{usec % 1000000:06d}] {message}"


def log_message(line) -> str:
    """A kernel_log line without its time stamp: the kernel's message, which its patterns match whole."""
    text = str(line)
    m = LOG_STAMP.match(text)
    return text[m.end():] if m else text


def boot_images(release: str | None, root: str = "/") -> dict:
    """The running release's kernel image and its initrd (None where absent), and the layout they follow.

    A layout whose kernel and initrd both exist wins; then a kernel of this release alone; /vmlinuz
    (which points at the newest kernel installed, not always the running one) only when nothing else.
    """
    def exists(path: str) -> bool:
        return os.path.isfile(os.path.join(root, path.lstrip("/")))

    found = []
    for layout, kernel, initrd in paths.BOOT_IMAGES if release else ():
        kernel, initrd = kernel.format(release=release), initrd.format(release=release)
        if exists(kernel):
            found.append({"kernel": kernel, "initrd": initrd if exists(initrd) else None, "layout": layout})
    ours = [f for f in found if f["layout"] != "symlink"]
    return next((f for f in ours if f["initrd"]), None) or (ours or found or [
        {"kernel": None, "initrd": None, "layout": None}])[0]


# The one internal option (doc fragment _host): where the kernel's file systems are, for the tests' simulated
# trees, and the controller's own boot id, which kho_kexec state=executed's action passes.  Not for playbooks.
INTERNAL = "_internal"
ROOTS = {"debugfs_root": paths.DEBUGFS, "sysfs_root": paths.SYSFS, "procfs_root": paths.PROCFS, "devfs_root": paths.DEVFS}
ARGUMENT_SPEC = {
    "mount_debugfs": {"type": "bool", "default": False},
    INTERNAL: {"type": "dict", "options": {**{k: {"type": "path", "default": v} for k, v in ROOTS.items()},
                                           "refuse_boot_id": {"type": "str"}}},
}
# The same for a module of the action group that reads none of them (doc fragment _host.group): accepted, ignored.
GROUP_SPEC = {"mount_debugfs": ARGUMENT_SPEC["mount_debugfs"], INTERNAL: {"type": "dict"}}


def internal(params: dict) -> dict:
    """The internal option's values, each at its default where not given (also where the option is absent)."""
    given = params.get(INTERNAL) or {}
    return {**ROOTS, "refuse_boot_id": None, **{k: v for k, v in given.items() if v is not None}}


def from_params(params: dict) -> KhoHost:
    roots = internal(params)
    return KhoHost(*(roots[k] for k in ROOTS))


def ensure_debugfs(module, host: KhoHost) -> bool:
    """Mount debugfs if allowed; True when it was (or in check mode would be) mounted."""
    if host.debugfs_mounted() or not module.params["mount_debugfs"]:
        return False
    if not module.check_mode:
        module.run_command(["mount", "-t", "debugfs", "debugfs", host.debugfs], check_rc=True)
    return True


class DetachError(Exception):
    """A job could not be started apart from this run."""


def detach(module, script: str, what: str, delay: int = 0) -> list:
    """Start the sh ``script`` apart from this run, ``delay`` seconds from now: a transient systemd unit (a timer,
    with a delay) where systemd runs, else a new session (setsid -f forks and returns at once; the job lets go of
    this run's pipes before it waits).  Returns the argv that started it; DetachError says ``what`` could not be."""
    systemd_run = module.get_bin_path("systemd-run")
    if systemd_run and os.path.isdir(paths.SYSTEMD_RUNNING):
        argv = [systemd_run, "--quiet", "--collect", *([f"--on-active={delay}"] if delay else []), "/bin/sh", "-c",
                script]
    else:
        setsid = module.get_bin_path("setsid")
        if not setsid:
            raise DetachError(f"neither systemd-run (with systemd running) nor setsid is on the host to {what}")
        wait = f"sleep {int(delay)}; " if delay else ""
        argv = [setsid, "-f", "/bin/sh", "-c", f"exec </dev/null >/dev/null 2>&1; {wait}{script}"]
    rc, out, err = module.run_command(argv)
    if rc:
        raise DetachError(f"{os.path.basename(argv[0])} could not {what} (rc {rc}): {(err or out).strip()}")
    return argv

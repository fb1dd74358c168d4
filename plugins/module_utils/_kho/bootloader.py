# Copyright (c) kexec.kho contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Boot loader backends for kho_cmdline: GRUB, grubby, kernel-install.  Not a public API.

Each backend reads the configured kernel command line and writes a new one.  Deciding
what the line should be happens in cmdline.apply_kho, so check mode needs no backend code.
"""

from __future__ import annotations

import glob
import os
import re

from ansible_collections.kexec.kho.plugins.module_utils._kho import files
from ansible_collections.kexec.kho.plugins.module_utils._kho.cmdline import KHO_KEYS, Cmdline, key_value

GRUB_VAR = "GRUB_CMDLINE_LINUX"
_ASSIGN = re.compile(rf"^(\s*(?:export\s+)?{GRUB_VAR}=)(.*)$")


class BootloaderError(Exception):
    pass


class Backend:
    name = ""
    path: str | None = None

    def __init__(self, module):
        self.module = module

    def read(self) -> str:
        raise NotImplementedError

    def write(self, before: str, after: str) -> dict:
        raise NotImplementedError

    def _run(self, argv: list) -> None:
        rc, out, err = self.module.run_command(argv)
        if rc:
            raise BootloaderError(f"{' '.join(argv)} failed (rc {rc}): {(err or out).strip()[-2000:]}")


class FileBackend(Backend):
    """A backend whose state is one text file, written atomically and restored if regeneration fails."""

    def render(self, original: bytes | None, line: str) -> bytes:
        raise NotImplementedError

    def regenerate_argv(self) -> list:
        return []

    def write(self, before: str, after: str) -> dict:
        original = files.read(self.path)
        backup = files.backup(self.path) if self.module.params["backup"] else None
        files.write_atomic(self.path, self.render(original, after))
        commands = self.regenerate_argv() if self.module.params["regenerate"] else []
        try:
            for argv in commands:
                self._run(argv)
        except BootloaderError as exc:
            if original is None:
                os.unlink(self.path)
            else:
                files.write_atomic(self.path, original)
            raise BootloaderError(f"{exc}; {self.path} was restored as it was") from exc
        return {"backup_file": backup, "regenerated": commands}


class Grub(FileBackend):
    """GRUB_CMDLINE_LINUX in /etc/default/grub, then update-grub or grub(2)-mkconfig."""

    name = "grub"

    def __init__(self, module, path: str, grub_cfg: str | None):
        super().__init__(module)
        self.path = path
        self.grub_cfg = grub_cfg

    @staticmethod
    def _split(text: str):
        """(line index, prefix, quote, inner, rest) of the last assignment, or None."""
        found = None
        for i, line in enumerate(text.splitlines(keepends=True)):
            m = _ASSIGN.match(line.rstrip("\n"))
            if not m:
                continue
            value = m.group(2)
            quote = value[:1] if value[:1] in ('"', "'") else ""
            if quote:
                end = 1
                while end < len(value) and (value[end] != quote or (quote == '"' and value[end - 1] == "\\")):
                    end += 1
                if end >= len(value):
                    raise BootloaderError(f"{GRUB_VAR} on line {i + 1} has an unterminated {quote} quote")
                inner, rest = value[1:end], value[end + 1:]
            else:
                inner, rest = re.match(r"(\S*)(.*)", value).groups()
            found = (i, m.group(1), quote, inner, rest)
        return found

    def read(self) -> str:
        data = files.read(self.path)
        if data is None:
            raise BootloaderError(f"{self.path} does not exist")
        found = self._split(data.decode())
        return found[3] if found else ""

    def render(self, original: bytes | None, line: str) -> bytes:
        text = (original or b"").decode()
        found = self._split(text)
        if not found:
            sep = "" if not text or text.endswith("\n") else "\n"
            return f'{text}{sep}{GRUB_VAR}="{line}"\n'.encode()
        i, prefix, quote, _inner, rest = found
        lines = text.splitlines(keepends=True)
        newline = "\n" if lines[i].endswith("\n") else ""
        quote = quote or '"'
        lines[i] = f"{prefix}{quote}{line}{quote}{rest}{newline}"
        return "".join(lines).encode()

    def regenerate_argv(self) -> list:
        update = self.module.get_bin_path("update-grub")
        if update and not self.module.params["grub_cfg"]:
            return [[update]]
        mkconfig = self.module.get_bin_path("grub2-mkconfig") or self.module.get_bin_path("grub-mkconfig")
        if not mkconfig:
            raise BootloaderError("neither update-grub nor grub2-mkconfig/grub-mkconfig is installed: "
                                  "install GRUB's tools, or set regenerate: false")
        cfg = self.grub_cfg or next((p for p in ("/boot/grub2/grub.cfg", "/boot/grub/grub.cfg")
                                     if os.path.exists(p)), "/boot/grub/grub.cfg")
        return [[mkconfig, "-o", cfg]]


class KernelInstall(FileBackend):
    """/etc/kernel/cmdline, read by kernel-install (systemd-boot, UKIs); entries regenerated per kernel."""

    name = "kernel-install"

    def __init__(self, module, path: str, running: str):
        super().__init__(module)
        self.path = path
        self.running = running

    def read(self) -> str:
        data = files.read(self.path)
        if data is None:  # kernel-install then uses the running line, less the boot loader's own
            c = Cmdline(self.running)
            for key in ("BOOT_IMAGE", "initrd"):
                c.remove(key)
            return str(c).strip()
        return data.decode().strip()

    def render(self, original: bytes | None, line: str) -> bytes:
        return (line + "\n").encode()

    def regenerate_argv(self) -> list:
        tool = self.module.get_bin_path("kernel-install")
        if not tool:
            return []
        return [[tool, "add", os.path.basename(os.path.dirname(image)), image]
                for image in sorted(glob.glob("/usr/lib/modules/*/vmlinuz"))]


class Grubby(Backend):
    """grubby --update-kernel: the boot entries themselves (Fedora, RHEL and their kin)."""

    name = "grubby"

    def __init__(self, module, target: str):
        super().__init__(module)
        self.target = target
        self.binary = module.get_bin_path("grubby")

    def read(self) -> str:
        rc, out, err = self.module.run_command([self.binary, f"--info={self.target}"])
        if rc:
            raise BootloaderError(f"grubby --info={self.target} failed (rc {rc}): {(err or out).strip()}")
        m = re.search(r'^args="?(.*?)"?$', out, re.M)
        if not m:
            raise BootloaderError(f"grubby --info={self.target} printed no args= line")
        return m.group(1)

    @staticmethod
    def argvs(binary: str, target: str, before: str, after: str) -> list:
        """Remove every KHO parameter the entry had, then add the ones wanted, in order."""
        had = [k for k, _v in Cmdline(before).params() if k.replace("-", "_") in KHO_KEYS]
        want = [t for t in str(after).split() if key_value(t)[0].replace("-", "_") in KHO_KEYS]
        out = []
        if had:
            out.append([binary, f"--update-kernel={target}", f"--remove-args={' '.join(dict.fromkeys(had))}"])
        if want:
            out.append([binary, f"--update-kernel={target}", f"--args={' '.join(want)}"])
        return out

    def write(self, before: str, after: str) -> dict:
        commands = self.argvs(self.binary, self.target, before, after)
        try:
            for argv in commands:
                self._run(argv)
        except BootloaderError as exc:
            for argv in self.argvs(self.binary, self.target, after, before):
                self.module.run_command(argv)
            raise BootloaderError(f"{exc}; the previous KHO arguments were put back") from exc
        return {"backup_file": None, "regenerated": commands}


def select(module, running: str) -> Backend:
    p = module.params
    choice = p["bootloader"]
    if choice == "auto":
        if module.get_bin_path("grubby"):
            choice = "grubby"
        elif os.path.exists(p["kernel_cmdline_file"]):
            choice = "kernel-install"
        elif os.path.exists(p["grub_file"]):
            choice = "grub"
        else:
            raise BootloaderError(f"no boot loader configuration found (no grubby, no {p['kernel_cmdline_file']}, "
                                  f"no {p['grub_file']}); set bootloader to grub, grubby or kernel-install")
    if choice == "grub":
        return Grub(module, p["grub_file"], p["grub_cfg"])
    if choice == "kernel-install":
        return KernelInstall(module, p["kernel_cmdline_file"], running)
    if not module.get_bin_path("grubby"):
        raise BootloaderError("bootloader=grubby, but grubby is not installed")
    return Grubby(module, p["grubby_kernel"])

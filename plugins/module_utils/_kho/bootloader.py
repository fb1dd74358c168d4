# Copyright (c) kexec.kho contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Boot loader backends for kho_cmdline: GRUB, grubby, kernel-install.  Not a public API.

Each backend first plans (reads only: the effective line before and after, the files or boot
entries that change) and then applies the plan; check mode stops after the plan.  Every writer
passes the tokens it adds through cmdline.gate, whatever validated them before.
"""

from __future__ import annotations

import glob
import os
import re

from ansible_collections.kexec.kho.plugins.module_utils._kho import files
from ansible_collections.kexec.kho.plugins.module_utils._kho.cmdline import (
    KHO_KEYS, Cmdline, check_length, gate, key_value, kho_signature, written_tokens,
)

GRUB_LINUX = "GRUB_CMDLINE_LINUX"
GRUB_DEFAULT = "GRUB_CMDLINE_LINUX_DEFAULT"
_ASSIGN = re.compile(rf"^(\s*(?:export\s+)?({GRUB_LINUX}(?:_DEFAULT)?)=)(.*)$")
_REFERENCE = re.compile(rf"\$(?:\{{({GRUB_LINUX}(?:_DEFAULT)?)\}}|({GRUB_LINUX}(?:_DEFAULT)?)(?![A-Za-z0-9_]))")
_MENUENTRY = re.compile(r"""^\s*menuentry\s+(?:'([^']*)'|"([^"]*)"|(\S+))""")
_LINUX = re.compile(r"^\s*linux(?:16|efi)?\s+\S+(.*)$")
_BLSCFG = re.compile(r"""^\s*(?:export\s+)?GRUB_ENABLE_BLSCFG=["']?true["']?\s*$""", re.M)


class BootloaderError(Exception):
    pass


def kho_tokens(line: str) -> list:
    return [tok for tok in Cmdline(line).tokens() if key_value(tok)[0].replace("-", "_") in KHO_KEYS]


class Backend:
    name = ""
    path: str | None = None

    def __init__(self, module):
        self.module = module

    def plan(self, edit, clean) -> dict:
        """edit(line) -> line wanted; clean(line) -> line without KHO parameters (for other places)."""
        raise NotImplementedError

    def apply(self, plan: dict) -> dict:
        raise NotImplementedError

    def _run(self, argv: list) -> None:
        rc, out, err = self.module.run_command(argv)
        if rc:
            raise BootloaderError(f"{' '.join(argv)} failed (rc {rc}): {(err or out).strip()[-2000:]}")


class FileBackend(Backend):
    """A backend whose state is text files: written atomically, each restored if regeneration fails."""

    def regenerate_argv(self) -> list:
        return []

    def gate_file(self, old: bytes | None, new: bytes) -> None:
        raise NotImplementedError

    def _target(self, path: str) -> str:
        return files.target(path, self.module.params["follow_symlinks"])

    def apply(self, plan: dict) -> dict:
        changed = plan["files"]
        for old, new in changed.values():
            self.gate_file(old, new)
        commands = self.regenerate_argv() if self.module.params["regenerate"] else []
        targets = {path: self._target(path) for path in changed}
        backups = {path: files.backup(targets[path]) for path in changed
                   if self.module.params["backup"] or path != self.path}
        written: list = []
        done: list = []
        try:
            for path, (_old, new) in changed.items():
                files.write_atomic(targets[path], new, module=self.module)
                written.append(path)
            for argv in commands:
                self._run(argv)
                done.append(argv)
        except BootloaderError as exc:
            for path in written:
                old = changed[path][0]
                if old is None:
                    os.unlink(targets[path])
                else:
                    files.write_atomic(targets[path], old, module=self.module)
            raise BootloaderError(f"{exc}; {', '.join(written)} restored as it was{self.undo(done)}") from exc
        return {"backup_file": backups.get(self.path) or next(iter(backups.values()), None),
                "backup_files": {k: v for k, v in backups.items() if v}, "regenerated": done}

    def undo(self, done: list) -> str:  # pylint: disable=unused-argument
        """After the files are restored: what else the regeneration commands in ``done`` left behind."""
        return ""


class Grub(FileBackend):
    """GRUB_CMDLINE_LINUX and _DEFAULT in /etc/default/grub and grub.d/*.cfg, then update-grub or mkconfig.

    The line judged is the one grub-mkconfig builds: both variables after the main file and every
    drop-in are sourced, in that order.  The KHO parameters live in the last GRUB_CMDLINE_LINUX
    assignment; one elsewhere is a conflict, removed or reported as ``grub_conflicts`` says.
    """

    name = "grub"
    bls_entries = "/boot/loader/entries"

    def __init__(self, module, path: str, grub_cfg: str | None):
        super().__init__(module)
        self.path = path
        self.grub_cfg = grub_cfg
        self.cfg_written: str | None = None

    def sources(self) -> list:
        """The files grub-mkconfig sources, in its order."""
        return [self.path, *sorted(glob.glob(os.path.join(os.path.dirname(self.path), "grub.d", "*.cfg")))]

    @staticmethod
    def assignments(text: str) -> list:
        """Each assignment of either variable: (line index, variable, prefix, quote, inner, rest)."""
        found = []
        for i, line in enumerate(text.splitlines(keepends=True)):
            m = _ASSIGN.match(line.rstrip("\n"))
            if not m:
                continue
            value = m.group(3)
            quote = value[:1] if value[:1] in ('"', "'") else ""
            if quote:
                end = 1
                while end < len(value) and (value[end] != quote or (quote == '"' and value[end - 1] == "\\")):
                    end += 1
                if end >= len(value):
                    raise BootloaderError(f"{m.group(2)} on line {i + 1} has an unterminated {quote} quote")
                inner, rest = value[1:end], value[end + 1:]
            else:
                inner, rest = re.match(r"(\S*)(.*)", value).groups()
            found.append((i, m.group(2), m.group(1), quote, inner, rest))
        return found

    @classmethod
    def effective(cls, texts: list) -> str:
        """The kernel arguments of a normal entry: GRUB_CMDLINE_LINUX then _DEFAULT, as sourced."""
        env = {GRUB_LINUX: "", GRUB_DEFAULT: ""}
        for text in texts:
            for _i, var, _prefix, quote, inner, _rest in cls.assignments(text):
                env[var] = inner if quote == "'" else _REFERENCE.sub(lambda m: env[m.group(1) or m.group(2)], inner)
        return " ".join(v.strip() for v in (env[GRUB_LINUX], env[GRUB_DEFAULT]) if v.strip())

    @staticmethod
    def _set(text: str, found: tuple, inner: str) -> str:
        i, _var, prefix, quote, _inner, rest = found
        lines = text.splitlines(keepends=True)
        newline = "\n" if lines[i].endswith("\n") else ""
        quote = quote or '"'
        lines[i] = f"{prefix}{quote}{inner}{quote}{rest}{newline}"
        return "".join(lines)

    def read_texts(self) -> dict:
        texts = {}
        for path in self.sources():
            self._target(path)  # a symlink refused by follow_symlinks=false is refused before any read
            data = files.read(path)
            if data is None:
                if path == self.path:
                    raise BootloaderError(f"{self.path} does not exist")
                continue
            texts[path] = data.decode()
        return texts

    def plan(self, edit, clean) -> dict:
        texts = self.read_texts()
        if _BLSCFG.search(texts[self.path]) and glob.glob(os.path.join(self.bls_entries, "*.conf")):
            raise BootloaderError(
                f"this host boots the BLS entries in {self.bls_entries} (GRUB_ENABLE_BLSCFG=true in {self.path}): each "
                "entry carries its own options, and GRUB_CMDLINE_LINUX reaches them only through grub2-mkconfig "
                "--update-bls-cmdline; use bootloader: grubby (auto picks it where grubby is installed)")
        places = [(path, a) for path, text in texts.items() for a in self.assignments(text)]
        linux = [pl for pl in places if pl[1][1] == GRUB_LINUX]
        target = linux[-1] if linux else None
        new = dict(texts)
        conflicts = []
        for path, a in places:
            if target is not None and (path, a[0]) == (target[0], target[1][0]):
                continue
            cleaned = clean(a[4])
            if cleaned != a[4]:
                conflicts.append({"file": path, "line": a[0] + 1, "variable": a[1], "parameters": kho_tokens(a[4])})
                new[path] = self._set(new[path], a, cleaned)
        if target is None:
            text = new[self.path]
            sep = "" if not text or text.endswith("\n") else "\n"
            new[self.path] = f'{text}{sep}{GRUB_LINUX}="{edit("")}"\n'
        else:
            new[target[0]] = self._set(new[target[0]], target[1], edit(target[1][4]))
        after = self.effective(list(new.values()))
        check_length(after, "the GRUB command line")
        return {"before": self.effective(list(texts.values())), "after": after, "conflicts": conflicts,
                "target": target[0] if target else self.path,
                "files": {p: (texts[p].encode(), new[p].encode()) for p in texts if new[p] != texts[p]}}

    def gate_file(self, old: bytes | None, new: bytes) -> None:
        before = self.assignments((old or b"").decode())
        after = self.assignments(new.decode())
        for i, a in enumerate(after):
            gate(written_tokens(before[i][4] if i < len(before) else "", a[4]))

    def regenerate_argv(self) -> list:
        update = self.module.get_bin_path("update-grub")
        if update and not self.module.params["grub_cfg"]:
            self.cfg_written = "/boot/grub/grub.cfg"
            return [[update]]
        mkconfig = self.module.get_bin_path("grub2-mkconfig") or self.module.get_bin_path("grub-mkconfig")
        if not mkconfig:
            raise BootloaderError("neither update-grub nor grub2-mkconfig/grub-mkconfig is installed: "
                                  "install GRUB's tools, or set regenerate: false")
        self.cfg_written = self.grub_cfg or next((p for p in ("/boot/grub2/grub.cfg", "/boot/grub/grub.cfg")
                                                  if os.path.exists(p)), "/boot/grub/grub.cfg")
        return [[mkconfig, "-o", self.cfg_written]]

    def check_cfg(self, after: str) -> dict | None:
        """Whether every linux line of the generated grub.cfg carries the KHO parameters of ``after``."""
        path = self.cfg_written
        data = files.read(path) if path else None
        if data is None:
            return None
        want = kho_signature(after)
        entries, missing, title = 0, [], None
        for line in data.decode(errors="replace").splitlines():
            m = _MENUENTRY.match(line)
            if m:
                title = next(g for g in m.groups() if g is not None)
            m = _LINUX.match(line)
            if m:
                entries += 1
                if kho_signature(m.group(1)) != want:
                    missing.append(title or f"linux line {entries}")
        return {"path": path, "entries": entries, "missing": missing}


class KernelInstall(FileBackend):
    """/etc/kernel/cmdline, read by kernel-install (systemd-boot, UKIs); entries regenerated per kernel."""

    name = "kernel-install"

    def __init__(self, module, path: str, running: str):
        super().__init__(module)
        self.path = path
        self.running = running

    def read(self, data: bytes | None = None) -> str:
        if data is None:  # kernel-install then uses the running line, less the boot loader's own
            c = Cmdline(self.running)
            for key in ("BOOT_IMAGE", "initrd"):
                c.remove(key)
            return str(c).strip()
        return data.decode().strip()

    def plan(self, edit, clean) -> dict:
        self._target(self.path)
        data = files.read(self.path)
        before = self.read(data)
        after = edit(before)
        check_length(after)
        return {"before": before, "after": after, "conflicts": [], "target": self.path,
                "files": {self.path: (data, (after + "\n").encode())} if after != before else {}}

    def gate_file(self, old: bytes | None, new: bytes) -> None:
        gate(written_tokens(self.read(old), new.decode()))

    def regenerate_argv(self) -> list:
        tool = self.module.get_bin_path("kernel-install")
        if not tool:
            return []
        return [[tool, "add", os.path.basename(os.path.dirname(image)), image]
                for image in sorted(glob.glob("/usr/lib/modules/*/vmlinuz"))]

    def undo(self, done: list) -> str:
        """Entries regenerated before the failure are regenerated again from the restored file."""
        stale = [argv[2] for argv in done if self.module.run_command(argv)[0]]
        if stale:
            return f"; the boot entries of {', '.join(stale)} could not be regenerated back and now differ"
        return f", and the entries of {', '.join(a[2] for a in done)} regenerated from it" if done else ""


class Grubby(Backend):
    """grubby --update-kernel: every boot entry that --info returns for the kernel asked for."""

    name = "grubby"

    def __init__(self, module, target: str):
        super().__init__(module)
        self.target = target
        self.binary = module.get_bin_path("grubby")

    def entries(self) -> list:
        rc, out, err = self.module.run_command([self.binary, f"--info={self.target}"])
        if rc:
            raise BootloaderError(f"grubby --info={self.target} failed (rc {rc}): {(err or out).strip()}")
        entries: list = []
        for line in out.splitlines():
            key, _eq, value = line.partition("=")
            if key == "index":
                entries.append({"index": value.strip()})
            elif entries and key in ("kernel", "args", "title"):
                entries[-1][key] = value.strip()[1:-1] if value.strip()[:1] == '"' else value.strip()
        if not entries or any("args" not in e for e in entries):
            raise BootloaderError(f"grubby --info={self.target} printed no entry with an args= line")
        return entries

    def plan(self, edit, clean) -> dict:
        plans = []
        for e in self.entries():
            after = edit(e["args"])
            check_length(after, f"the command line of boot entry {e['index']}")
            plans.append({"index": e["index"], "kernel": e.get("kernel"), "title": e.get("title"),
                          "before": e["args"], "after": after, "changed": after != e["args"]})
        return {"before": plans[0]["before"], "after": plans[0]["after"], "conflicts": [], "target": None,
                "entries": plans, "files": {}, "commands": [argv for p in plans if p["changed"]
                                                            for argv in self.argvs(p["index"], p["before"], p["after"])]}

    def argvs(self, index: str, before: str, after: str) -> list:
        """Remove every KHO parameter the entry had, then add the ones wanted, in order."""
        had = [key_value(t)[0] for t in kho_tokens(before)]
        want = kho_tokens(after)
        out = []
        if had:
            out.append([self.binary, f"--update-kernel={index}", f"--remove-args={' '.join(dict.fromkeys(had))}"])
        if want:
            out.append([self.binary, f"--update-kernel={index}", f"--args={' '.join(want)}"])
        return out

    def apply(self, plan: dict) -> dict:
        for p in plan["entries"]:
            if p["changed"]:
                gate(kho_tokens(p["after"]) + [key_value(t)[0] for t in kho_tokens(p["before"])])
        done = []
        try:
            for argv in plan["commands"]:
                self._run(argv)
                done.append(argv)
        except BootloaderError as exc:
            for p in plan["entries"]:
                if p["changed"]:
                    for argv in self.argvs(p["index"], p["after"], p["before"]):
                        self.module.run_command(argv)
            raise BootloaderError(f"{exc}; the previous KHO arguments were put back") from exc
        return {"backup_file": None, "backup_files": {}, "regenerated": done}


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

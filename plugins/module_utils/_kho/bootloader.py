# Copyright (c) kexec.kho contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Boot loader backends for kho_cmdline: GRUB, grubby, kernel-install.  Not a public API.

Each backend first plans (reads only: the effective line before and after, the files or boot
entries that change) and then applies the plan; check mode stops after the plan.  Every writer
passes the tokens it adds through cmdline.gate, whatever validated them before.
"""

from __future__ import annotations

import errno
import glob
import os
import re

from ansible_collections.kexec.kho.plugins.module_utils._kho import files
from ansible_collections.kexec.kho.plugins.module_utils._kho import grub_shell as sh
from ansible_collections.kexec.kho.plugins.module_utils._kho import paths
from ansible_collections.kexec.kho.plugins.module_utils._kho.cmdline import (
    KHO_KEYS, SAFE_TOKEN, SIZE_FORM, Cmdline, GrammarError, check_length, gate, key_value, kho_signature, written_tokens,
)

GRUB_LINUX, GRUB_DEFAULT = sh.VARS
GRUB_FILE_MAX = 1 << 20
# Python's int() stops at 4300 digits, and no size below 2^64 needs more than 22 (octal): far longer is refused unparsed.
_LONG_NUMBER = re.compile(r"[0-9]{64,}")
_MENUENTRY = re.compile(r"""^\s*menuentry\s+(?:'([^']*)'|"([^"]*)"|(\S+))""")
_LINUX = re.compile(r"^\s*linux(?:16|efi)?\s+\S+(.*)$")
# grub-mkconfig marks each script's output; the entries built from GRUB_CMDLINE_LINUX are 10_linux's (10_linux_zfs on
# Ubuntu), while memtest86+, os-prober and 40_custom write linux lines of their own.
_SECTION = re.compile(r"^### (BEGIN|END) (\S+) ###$")
_LINUX_SCRIPT = re.compile(r"(?:.*/)?[0-9]+_linux(?:_[A-Za-z0-9]+)?")
# Blanks within a line only: ^\s* would run across every blank line from each one, quadratic in a file of them.
_BLSCFG = re.compile(r"""^[ \t]*(?:export[ \t]+)?GRUB_ENABLE_BLSCFG=["']?true["']?[ \t]*$""", re.M)


def needs_root(exc: OSError) -> str:
    """The way out of a permission error for a user other than root."""
    if exc.errno in (errno.EACCES, errno.EPERM) and os.geteuid() != 0:
        return ": changing the boot loader configuration needs root, run with become: true"
    return ""


class BootloaderError(Exception):
    pass


def kho_tokens(line: str) -> list:
    return [tok for tok in Cmdline(line).tokens() if key_value(tok)[0].replace("-", "_") in KHO_KEYS]


def other_tokens(line: str) -> list:
    """What a line says besides the KHO parameters: what an edit must keep, in order."""
    kho = kho_tokens(line)
    return [tok for tok in Cmdline(line).tokens() if tok not in kho]


def short(text: str, size: int = 160) -> str:
    return repr(text) if len(text) <= size else f"{text[:size]!r}... ({len(text)} characters)"


def check_numbers(line: str, where: str) -> None:
    """A KHO parameter with a number far too long for a size is refused before anything parses it."""
    for tok in kho_tokens(line):
        m = _LONG_NUMBER.search(tok)
        if m:
            raise BootloaderError(f"{where}: {key_value(tok)[0]}= has a number of {len(m.group())} digits, not a size; "
                                  f"the form is {SIZE_FORM}; correct it or remove it (state: absent cannot parse it either)")


def check_option_numbers(params: dict) -> None:
    """The same for the task's options, before they are validated."""
    values = {"scratch": params.get("scratch")}
    for i, region in enumerate(params.get("reserve_mem") or []):
        if isinstance(region, dict):
            values.update({f"reserve_mem[{i}].size": region.get("size"), f"reserve_mem[{i}].align": region.get("align")})
    for what, value in values.items():
        m = _LONG_NUMBER.search(value) if isinstance(value, str) else None
        if m:
            raise GrammarError(f"{what} has a number of {len(m.group())} digits ({value[:24]}...); the form is {SIZE_FORM}")


def decode(path: str, data: bytes) -> str:
    try:
        return data.decode()
    except UnicodeDecodeError as exc:
        raise BootloaderError(f"{path} is not UTF-8 (byte {data[exc.start]:#04x} at offset {exc.start}); "
                              "write it in UTF-8 (a kernel command line is ASCII)") from None


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
                try:
                    files.write_atomic(targets[path], new, module=self.module)
                except OSError as exc:
                    raise BootloaderError(f"writing {path} failed ({exc.strerror or exc}){needs_root(exc)}") from exc
                written.append(path)
            for argv in commands:
                self._run(argv)
                done.append(argv)
            checked = self.check_generated(plan["after"]) if done else {}
        except BootloaderError as exc:
            raise BootloaderError(f"{exc}; {self.rollback(changed, targets, written, backups)}{self.undo(done)}") from exc
        return {"backup_file": backups.get(self.path) or next(iter(backups.values()), None),
                "backup_files": {k: v for k, v in backups.items() if v}, "regenerated": done, **checked}

    def check_generated(self, after: str) -> dict:  # pylint: disable=unused-argument
        """After the regeneration: what it generated, checked to carry ``after``, or BootloaderError."""
        return {}

    def rollback(self, changed: dict, targets: dict, written: list, backups: dict) -> str:
        """Every file written is put back byte for byte (or removed, if it was created): what happened, said."""
        lost = []
        for path in written:
            old = changed[path][0]
            try:
                if old is None:
                    os.unlink(targets[path])
                else:
                    files.write_atomic(targets[path], old, module=self.module)
            except OSError as exc:
                lost.append(f"{path} could not be restored ({exc.strerror or exc}) and holds the new text"
                            + (f"; its backup is {backups[path]}" if backups.get(path) else ""))
        if lost:
            return "; ".join(lost)
        if not written:
            return f"nothing was written: {', '.join(changed)} as they were"
        kept = [p for p in changed if p not in written]
        return (f"{', '.join(written)} restored as it was" + (f", {', '.join(kept)} not written" if kept else "")
                + ": every file is as it was")

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
    bls_entries = paths.BLS_ENTRIES
    grub_cfgs = paths.GRUB_CFGS

    def __init__(self, module, path: str, grub_cfg: str | None):
        super().__init__(module)
        self.path = path
        self.grub_cfg = grub_cfg
        self.cfg_written: str | None = None
        self.cfg_before: bytes | None = None  # grub.cfg as it was before the regeneration

    def sources(self) -> list:
        """The files grub-mkconfig sources, in its order."""
        return [self.path, *sorted(glob.glob(os.path.join(os.path.dirname(self.path), "grub.d", "*.cfg")))]

    def read_texts(self) -> dict:
        """Each file that exists, decoded so that any byte comes back as it was (surrogateescape)."""
        texts = {}
        for path in self.sources():
            self._target(path)  # a symlink refused by follow_symlinks=false is refused before any read
            data = files.read(path)
            if data is None:
                if path == self.path:
                    raise BootloaderError(f"{self.path} does not exist")
                continue
            if len(data) > GRUB_FILE_MAX:
                raise BootloaderError(f"{path} is {len(data)} bytes; a GRUB defaults file this module edits is at most "
                                      f"{GRUB_FILE_MAX} bytes")
            texts[path] = data.decode("utf-8", "surrogateescape")
        return texts

    @staticmethod
    def scan(texts: dict) -> tuple:
        """Every managed assignment in the order sh runs them, as (file, Assignment), and the variables at the end."""
        env = {var: "" for var in sh.VARS}
        found = []
        for path, text in texts.items():
            try:
                found += [(path, a) for a in sh.Scan(text, env).assignments]
            except sh.ShellError as exc:
                n = sh.line_of(text, exc.offset)
                line = text.split("\n")[n - 1]
                instead = f"{exc.instead}; and " if exc.instead else ""
                raise BootloaderError(f"{path} line {n} ({line[:80]!r}): {exc.why}; the module cannot be sure what sh "
                                      f"computes there, so it changes nothing: {instead}{sh.HOW}") from None
        return found, env

    @staticmethod
    def effective(env: dict) -> str:
        """The kernel arguments of a normal entry: GRUB_CMDLINE_LINUX then _DEFAULT, as sourced."""
        return " ".join(v.strip() for v in (env[GRUB_LINUX], env[GRUB_DEFAULT]) if v.strip())

    @staticmethod
    def _set(text: str, a: sh.Assignment, inner: str) -> str:
        lines = text.split("\n")
        lines[a.line] = a.render(inner)
        return "\n".join(lines)

    def check_bls(self, text: str) -> None:
        if _BLSCFG.search(text) and glob.glob(os.path.join(self.bls_entries, "*.conf")):
            raise BootloaderError(
                f"this host boots the BLS entries in {self.bls_entries} (GRUB_ENABLE_BLSCFG=true in {self.path}): each "
                "entry carries its own options, and GRUB_CMDLINE_LINUX reaches them only through grub2-mkconfig "
                "--update-bls-cmdline; use bootloader: grubby (auto picks it where grubby is installed)")

    def plan(self, edit, clean) -> dict:
        texts = self.read_texts()
        self.check_bls(texts[self.path])
        places, env = self.scan(texts)
        for path, a in places:
            check_numbers(f"{a.inner} {a.value}", f"{path} line {a.line + 1}")
        linux = [pl for pl in places if pl[1].var == GRUB_LINUX]
        target = linux[-1] if linux else None
        new = dict(texts)
        conflicts = []
        for path, a in places:
            cleaned = clean(a.inner)
            if (path, a) != target and cleaned != a.inner:
                conflicts.append({"file": path, "line": a.line + 1, "variable": a.var, "parameters": kho_tokens(a.inner)})
                new[path] = self._set(new[path], a, cleaned)
        if target is None:
            text = new[self.path]
            sep = "" if not text or text.endswith("\n") else "\n"
            new[self.path] = f'{text}{sep}{GRUB_LINUX}="{edit("")}"\n'
        else:
            new[target[0]] = self._set(new[target[0]], target[1], edit(target[1].inner))
        after = self.verify(texts, new, {path: {a.line for p, a in places if p == path} for path in texts}, env, edit)
        check_length(after, "the GRUB command line")
        return {"before": self.effective(env), "after": after, "conflicts": conflicts,
                "target": target[0] if target else self.path,
                "files": {p: (texts[p].encode("utf-8", "surrogateescape"), new[p].encode("utf-8", "surrogateescape"))
                          for p in texts if new[p] != texts[p]}}

    def verify(self, texts: dict, new: dict, lines: dict, env: dict, edit) -> str:
        """The candidate files, read again as sh reads them: only the assignments planned differ, each variable
        says what it said besides the KHO parameters, and the line says what is asked.  The line, or refused."""
        for path, text in new.items():
            if not self._only(lines[path], texts[path], text):
                raise BootloaderError(f"kexec.kho bug: the edit of {path} would change other lines; nothing was written")
        try:
            _places, got = self.scan(new)
        except BootloaderError as exc:
            raise BootloaderError(f"the rewritten files would not be read as planned: {exc}") from None
        for var in sh.VARS:
            if other_tokens(got[var]) != other_tokens(env[var]):
                raise BootloaderError(f"after the edit sh would compute {var}={short(got[var])}, not {short(env[var])} and the KHO "
                                      f"parameters; nothing was written: {sh.HOW}")
        after = self.effective(got)
        if kho_signature(edit(after)) != kho_signature(after):
            raise BootloaderError(f"after the edit sh would compute the command line {short(after)}, which still does not say "
                                  "what is asked: a KHO parameter comes from a place the module does not edit (another "
                                  f"variable); nothing was written: {sh.HOW}")
        return after

    @staticmethod
    def _only(lines: set, old: str, new: str) -> bool:
        """Whether ``new`` differs from ``old`` in those lines only, or appends to it."""
        old_lines, new_lines = old.split("\n"), new.split("\n")
        if len(new_lines) != len(old_lines):
            return new.startswith(old) and new[len(old):].count("\n") == 1 + (not old.endswith("\n") and bool(old))
        return all(o == n for i, (o, n) in enumerate(zip(old_lines, new_lines)) if i not in lines)

    def gate_file(self, old: bytes | None, new: bytes) -> None:
        before = {a.line: a.inner for a in sh.Scan((old or b"").decode("utf-8", "surrogateescape"), None).assignments}
        for a in sh.Scan(new.decode("utf-8", "surrogateescape"), None).assignments:
            gate(written_tokens(before.get(a.line, ""), a.inner))

    def regenerate_argv(self) -> list:
        """The regeneration, and the grub.cfg it writes, whose bytes are kept to put back if its result is refused."""
        update = self.module.get_bin_path("update-grub")
        mkconfig = self.module.get_bin_path("grub2-mkconfig") or self.module.get_bin_path("grub-mkconfig")
        if update and not self.module.params["grub_cfg"]:
            self.cfg_written, argv = self.grub_cfgs[-1], [update]
        elif mkconfig:
            self.cfg_written = self.grub_cfg or next((p for p in self.grub_cfgs if os.path.exists(p)), self.grub_cfgs[-1])
            argv = [mkconfig, "-o", self.cfg_written]
        else:
            raise BootloaderError("neither update-grub nor grub2-mkconfig/grub-mkconfig is installed: "
                                  "install GRUB's tools, or set regenerate: false")
        self.cfg_before = self.read_cfg()
        return [argv]

    def read_cfg(self) -> bytes | None:
        """The grub.cfg the regeneration writes, as it stands (None: no such file)."""
        try:
            return files.read(self.cfg_written)
        except OSError as exc:
            raise BootloaderError(f"{self.cfg_written} cannot be read ({exc.strerror or exc}){needs_root(exc)}; set "
                                  "grub_cfg to the grub.cfg file GRUB reads") from None

    def check_cfg(self, after: str) -> dict | None:
        """Whether every linux line that grub-mkconfig built from GRUB_CMDLINE_LINUX (10_linux's section, or every
        linux line of a file without sections) carries the KHO parameters of ``after``; None if there is no file."""
        data = self.read_cfg() if self.cfg_written else None
        if data is None:
            return None
        lines = data.decode(errors="replace").splitlines()
        sectioned = any(_SECTION.match(line) for line in lines)
        want = kho_signature(after)
        entries, missing, title, script = 0, [], None, None
        for line in lines:
            m = _SECTION.match(line)
            if m:
                script = m.group(2) if m.group(1) == "BEGIN" else None
            m = _MENUENTRY.match(line)
            if m:
                title = next(g for g in m.groups() if g is not None)
            m = _LINUX.match(line)
            if m and (not sectioned or script is not None and _LINUX_SCRIPT.fullmatch(script)):
                entries += 1
                if kho_signature(m.group(1)) != want:
                    missing.append(title or f"linux line {entries}")
        return {"path": self.cfg_written, "entries": entries, "missing": missing}

    def check_generated(self, after: str) -> dict:
        """The regenerated grub.cfg must carry the parameters in every entry built from GRUB_CMDLINE_LINUX: a file
        missing, without such an entry, or with one that lacks them is refused, and everything is put back."""
        checked = self.check_cfg(after)
        asked = " ".join(kho_tokens(after)) or "none"
        if checked is None:
            raise BootloaderError(f"the regeneration wrote no {self.cfg_written}, so nothing shows that the boot entries "
                                  f"carry the KHO parameters asked for ({asked}); set grub_cfg to the file GRUB reads")
        if not checked["entries"]:
            raise BootloaderError(f"the regenerated {self.cfg_written} has no linux line from /etc/grub.d/10_linux, so "
                                  f"nothing shows that a kernel gets the KHO parameters asked for ({asked}); install a "
                                  "kernel in /boot, or set grub_cfg to the file GRUB reads")
        if checked["missing"]:
            raise BootloaderError(f"the regenerated {self.cfg_written} has entries whose linux line lacks the KHO "
                                  f"parameters asked for ({asked}): {', '.join(checked['missing'])}; a script in "
                                  "/etc/grub.d or a setting this module does not read builds their line: find it, or set "
                                  "the parameters there")
        return {"grub_cfg": checked}

    def undo(self, done: list) -> str:
        """A grub.cfg the regeneration rewrote is put back byte for byte (removed, if there was none)."""
        path = self.cfg_written
        try:
            if not done or path is None or files.read(path) == self.cfg_before:
                return ""
            if self.cfg_before is None:
                os.unlink(path)
            else:
                files.write_atomic(path, self.cfg_before, module=self.module)
        except OSError as exc:
            return f"; {path} could not be put back ({exc.strerror or exc}) and holds the regenerated entries"
        return f", and {path} put back as it was"


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
        return decode(self.path, data).strip()

    def plan(self, edit, clean) -> dict:
        self._target(self.path)
        data = files.read(self.path)
        before = self.read(data)
        check_numbers(before, self.path)
        after = edit(before)
        check_length(after)
        return {"before": before, "after": after, "conflicts": [], "target": self.path,
                "files": {self.path: (data, (after + "\n").encode())} if after != before else {}}

    def gate_file(self, old: bytes | None, new: bytes) -> None:
        gate(written_tokens(self.read(old), decode(self.path, new)))

    def regenerate_argv(self) -> list:
        tool = self.module.get_bin_path("kernel-install")
        if not tool:
            return []
        return [[tool, "add", os.path.basename(os.path.dirname(image)), image]
                for image in sorted(glob.glob(paths.MODULES_IMAGES))]

    def undo(self, done: list) -> str:
        """Entries regenerated before the failure are regenerated again from the restored file."""
        stale = [argv[2] for argv in done if self.module.run_command(argv)[0]]
        if stale:
            return f"; the boot entries of {', '.join(stale)} could not be regenerated back and now differ"
        return f", and the entries of {', '.join(a[2] for a in done)} regenerated from it" if done else ""


def unquoted(line: str) -> str:
    """KHO parameters spelled with quotes (kho="on", which grubby may print) spelled without: the kernel reads both
    alike, and only the plain spelling passes the writer's gate."""
    for tok in kho_tokens(line):
        key, value = key_value(tok)
        plain = key if value is None else f"{key}={value}"
        if tok != plain and SAFE_TOKEN.fullmatch(plain):
            line = re.sub(rf"(?<!\S){re.escape(tok)}(?!\S)", plain, line, count=1)
    return line


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
        for line in out.split("\n"):
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
            where = f"grubby entry {e['index']}"
            check_numbers(e["args"], where)
            after = edit(unquoted(e["args"]))
            check_length(after, f"the command line of boot entry {e['index']}")
            bad = [t for t in kho_tokens(after) if not SAFE_TOKEN.fullmatch(t)]
            if bad:
                raise BootloaderError(f"{where} has {bad[0]!r}, a KHO parameter the module does not rewrite as it is; "
                                      "write it as kho=on, kho_scratch=N% or reserve_mem=SIZE:ALIGN:LABEL, or remove it")
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

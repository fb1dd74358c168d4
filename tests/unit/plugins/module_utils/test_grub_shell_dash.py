"""The GRUB reader against dash itself, over a generated corpus of defaults files.

For every file the module accepts, GRUB_CMDLINE_LINUX and GRUB_CMDLINE_LINUX_DEFAULT as the module computes them are
what dash computes sourcing the file; for every file it rewrites, the file it writes, sourced by dash, gives its
cmdline_after.  The files come from a seeded generator (the same corpus on every run) over a small grammar of sh:
assignments in every quoting, comments, lists (&&, ||, |, &, ;) with newlines after their operators, if/then/fi,
continuations, here-documents, functions, and the words the reader refuses.
"""

from __future__ import annotations

import random
import shutil
import subprocess
from pathlib import Path

import pytest

from ansible_collections.kexec.kho.plugins.module_utils._kho import bootloader as B
from ansible_collections.kexec.kho.plugins.module_utils._kho.cmdline import GrammarError, apply_kho, check_request

from test_bootloader import FakeModule  # pylint: disable=import-error

DASH = shutil.which("dash")
pytestmark = pytest.mark.skipif(DASH is None, reason="dash (Debian's /bin/sh) is not installed: the reader's reference")
SEED, SIZE = 37, 500
REPRODUCER = '[ -e /nonexistent ] &&\n    GRUB_CMDLINE_LINUX="console=ttyS0 quiet"\n'  # issue #37, item 2
# Each directory's grub sourced in a subshell of one dash, as `dash -c '. ./grub; printf ...'` would, the variables
# printed after it; no output where dash could not source the file.
SOURCE = ('for kho_dir in "$@"; do (cd "$kho_dir" && { . ./grub; } </dev/null >/dev/null 2>"$kho_dir/err"; '
          'printf "%s\\n%s" "$GRUB_CMDLINE_LINUX" "$GRUB_CMDLINE_LINUX_DEFAULT" >"$kho_dir/out"); done; exit 0')


class Corpus:
    """GRUB defaults files from a grammar of sh, seeded."""

    PARAMS = ("ro", "quiet", "console=ttyS0,115200", "splash", "kho=off", "reserve_mem=2M:4K:old", "pci=noaer", "")
    REFS = ("$X", "${Y}", "$GRUB_CMDLINE_LINUX", "${GRUB_CMDLINE_LINUX_DEFAULT}", "\\$5", '\\"q\\"', "a#b", "\\\\x", "$")
    OURS = ("GRUB_CMDLINE_LINUX", "GRUB_CMDLINE_LINUX_DEFAULT")
    OTHERS = ("X", "Y")
    COMMANDS = ("true", "false", ":", "[ -e /nonexistent ]", "[ -d / ]", "echo hello >/dev/null", ': "$X"',
                "cat </dev/null", "f", "test -n \"$Y\"")
    GAPS = (" ", " ", "\n", "\n    ", " # a comment\n", "\n\n  ", "\\\n    ", "\n# between\n", "\t", "#c\n")
    REFUSED = ("eval 'X=1'", "command eval 'GRUB_CMDLINE_LINUX=evil'", "command true", "builtin true", ". /dev/null",
               "source /dev/null", "true && eval 'Y=2'", "echo eval >/dev/null", "echo . >/dev/null",
               "export GRUB_CMDLINE_LI\"\"NUX=evil", "export 'X'=1", "export X=$Y", "readonly GRUB_CMDLINE_LINUX",
               ": $((X=1))", "X=$((1+2))", "unset GRUB_CMDLINE_LINUX_DEFAULT", "GRUB_CMDLINE_LI\\\nNUX=evil",
               "export -n X", "$Z", "exit 0", "function g { X=1; }", "select X in a; do :; done", 'X=$"ro"', "fi",
               "local Y=1")

    def __init__(self, seed: int):
        self.r = random.Random(seed)
        self.readonly = 0

    def pick(self, options):
        return self.r.choice(options)

    def file(self) -> str:
        return "\n".join(self.statement() for _n in range(self.r.randint(1, 6))) + self.pick(("\n", "", "\n\n"))

    def statement(self) -> str:
        kinds = {self.assignment: 30, self.command: 8, self.listed: 20, self.background: 3, self.sequence: 4,
                 self.conditional: 8, self.compound: 6, self.comment: 6, self.continued: 5, self.exported: 6,
                 self.refused: 4, self.heredoc: 3, self.function: 3, self.around: 6}
        return self.r.choices(list(kinds), list(kinds.values()))[0]()

    def words(self, refs: bool) -> str:
        pool = self.PARAMS + (self.REFS if refs else ())
        return " ".join(self.pick(pool) for _n in range(self.r.randint(0, 3)))

    def value(self) -> str:
        form = self.r.choices(["double", "single", "plain", "mixed", "bare"], [50, 20, 15, 8, 7])[0]
        if form == "double":
            return f'"{self.words(True)}"'
        if form == "single":
            return f"'{self.words(False)}'"
        if form == "plain":
            return self.pick(self.PARAMS)
        if form == "mixed":
            return self.pick((f'"{self.words(False)}"\'{self.words(False)}\'', "'it'\\''s'", "a\\ b", "x#y"))
        return self.pick(("$X", "${Y}", "$GRUB_CMDLINE_LINUX"))

    def assignment(self, ours: float = 0.6) -> str:
        name = self.pick(self.OURS if self.r.random() < ours else self.OTHERS)
        return (self.pick(("", "", "", "export ", "  ")) + f"{name}={self.value()}"
                + self.pick(("", "", "", "  # keep this comment")))

    def simple(self) -> str:
        """A command inside a list or a compound command: mostly not one of ours, which the module refuses there."""
        return self.assignment(ours=0.15) if self.r.random() < 0.5 else self.pick(self.COMMANDS)

    def command(self) -> str:
        return self.pick(self.COMMANDS)

    def listed(self) -> str:
        parts = [self.simple() for _n in range(self.r.randint(2, 3))]
        out = parts[0]
        for part in parts[1:]:
            out += f" {self.pick(('&&', '||', '|'))}{self.pick(self.GAPS)}{part}"
        return out

    def background(self) -> str:
        return f"{self.simple()} &" + self.pick(("", f" {self.simple()}"))

    def sequence(self) -> str:
        return f"{self.simple()}; {self.simple()}"

    def conditional(self) -> str:
        test = self.pick(("[ -e /nonexistent ]", "true", "false", "[ -d / ] && true"))
        body = "\n".join(f"  {self.simple()}" for _n in range(self.r.randint(1, 2)))
        if self.r.random() < 0.5:
            return f"if {test}; then\n{body}\nfi"
        return f"if {test}\nthen\n{body}\nelse\n  {self.simple()}\nfi"

    def compound(self) -> str:
        body = self.simple()
        return self.pick((f'case "$X" in a|ro) {body};; *) :;; esac', f"for i in a b; do {body}; done",
                          f"while false; do {body}; done", f"{{ {body}; }}", f"( {body} )", f"! {body}",
                          f"until true; do {body}; done", f"{{ {body}\n}} >/dev/null"))

    def around(self) -> str:
        """An assignment with something around it: a redirection, a command after it, another assignment."""
        return self.pick((f"{self.assignment()} >/dev/null", f"{self.assignment()} 2>/dev/null", f"{self.assignment()};",
                          f"{self.assignment()} {self.assignment()}", f"{self.assignment()} true",
                          f"X={self.pick(self.PARAMS)}\t", f"\t{self.assignment()}", ": ${X:=dflt}",
                          "X=${Y:-ro}", ": ${Y=quiet}", f"{self.assignment(ours=0)} :"))

    def comment(self) -> str:
        return self.pick(("", "# GRUB_CMDLINE_LINUX=\"not this\"", "#!/bin/sh", "   "))

    def continued(self) -> str:
        return self.pick((f"{self.command()} \\\n  && {self.assignment()}", 'GRUB_CMDLINE_LINUX="ro \\\nquiet"',
                          f"X=a\\\nb{self.pick(self.PARAMS)}", f"{self.command()} && \\\n  {self.simple()}"))

    def exported(self) -> str:
        self.readonly += 1
        return self.pick((f"export {self.pick(self.OURS + self.OTHERS)}", f"export X={self.value()}",
                          f"export {self.pick(self.OURS)}={self.value()}", f"readonly R{self.readonly}=1",
                          f"readonly {self.pick(self.OTHERS)}={self.pick(self.PARAMS)}", "local Y=1",
                          f"export GRUB_CMDLINE_LI\"\"NUX={self.value()}", "export -p >/dev/null"))

    def refused(self) -> str:
        return self.pick(self.REFUSED)

    def heredoc(self) -> str:
        return self.pick((f"cat >/dev/null <<EOF\n{self.assignment()}\nEOF",
                          f"cat <<EOF >/dev/null &&\nbody\nEOF\n{self.simple()}",
                          "cat <<'EOF' >/dev/null\n$X\nEOF"))

    def function(self) -> str:
        return self.pick(("f() { X=1; }", "f() { Y=$X; }", "f() { :; }", "f() { local X=2; }"))


def corpus() -> list:
    gen = Corpus(SEED)
    return [REPRODUCER] + [gen.file() for _n in range(SIZE)]


def dash(directories: list) -> dict:
    """What dash computes for both variables, by directory: None where it could not source the file."""
    for d in directories:
        for name in ("out", "err"):
            (d / name).unlink(missing_ok=True)
    subprocess.run(["env", "-i", DASH, "-c", SOURCE, "dash", *(str(d.resolve()) for d in directories)], check=True, timeout=60,
                   stdin=subprocess.DEVNULL)
    got = {}
    for d in directories:
        out = d / "out"
        got[d] = tuple(out.read_text().split("\n", 1)) if out.exists() else None
    return got


def request(state: str):
    wanted = check_request(kho="on", reserve_mem=[{"size": "1M", "align": 4096, "label": "oops"}])
    return (lambda line: apply_kho(line, state, wanted["kho"], None, "auto", wanted["reserve_mem"]),
            lambda line: apply_kho(line, "absent"))


def module_reads(d: Path):
    """The module's variables after the file, or the reason it refuses it."""
    text = (d / "grub").read_text()
    try:
        _places, env = B.Grub.scan({str(d / "grub"): text})
    except B.BootloaderError as exc:
        return None, str(exc)
    return (env["GRUB_CMDLINE_LINUX"], env["GRUB_CMDLINE_LINUX_DEFAULT"]), None


def module_rewrites(d: Path, state: str):
    """The plan the module made and wrote, or None where it refused the file."""
    grub = B.Grub(FakeModule(d, regenerate=False), str(d / "grub"), None)
    try:
        plan = grub.plan(*request(state))
    except (B.BootloaderError, GrammarError):
        return None
    if plan["files"]:
        grub.apply(plan)
    return plan


def effective(pair: tuple) -> str:
    return " ".join(v.strip() for v in pair if v.strip())


@pytest.fixture(scope="module")
def files(tmp_path_factory) -> list:
    root = tmp_path_factory.mktemp("corpus")
    directories = []
    for i, text in enumerate(corpus()):
        d = root / f"{i:04}"
        d.mkdir()
        (d / "grub").write_text(text)
        directories.append(d)
    return directories


def test_every_file_the_module_accepts_means_what_dash_computes(files):
    shell = dash(files)
    refused, accepted = {}, []
    for d in files:
        got, why = module_reads(d)
        if got is None:
            refused[d] = why
            continue
        accepted.append(d)
        text = (d / "grub").read_text()
        assert shell[d] is not None, f"{text!r}: accepted, but dash cannot source it: {(d / 'err').read_text()}"
        assert got == shell[d], f"{text!r}: the module reads {got}, dash {shell[d]}"
    assert files[0] in refused and "line 2 (" in refused[files[0]] and "in a list joined by && or ||" in refused[files[0]]
    # the corpus exercises both sides, and each refusal the grammar is there for
    assert len(accepted) > SIZE // 4 and len(refused) > SIZE // 4, (len(accepted), len(refused))
    reasons = " ".join(refused.values())
    for why in ("in the background (&)", "in a list joined by && or ||", "in a pipeline (|)", "eval as a word",
                "command runs a command", "a word that is not a plain NAME", "an arithmetic expansion", "spelled with quotes"):
        assert why in reasons, why


@pytest.mark.parametrize("state", ["present", "absent"])
def test_the_file_the_module_writes_gives_its_cmdline_after_in_dash(files, state):
    plans = {d: module_rewrites(d, state) for d in files}
    written = [d for d, plan in plans.items() if plan is not None]
    shell = dash(written)
    for d in written:
        assert shell[d] is not None, f"dash cannot source the file the module wrote: {(d / 'grub').read_text()!r}"
        assert effective(shell[d]) == plans[d]["after"], f"{(d / 'grub').read_text()!r}: dash {shell[d]}"
    assert len(written) > SIZE // 5, len(written)
    assert sum(bool(plans[d]["files"]) for d in written) > SIZE // 5


# Forms the reader once misread (item 2 of #37): what dash computes, and the line and reason of the refusal.
FIXED = {
    "and-newline": (REPRODUCER, ("", ""), 2, "GRUB_CMDLINE_LINUX set in a list joined by && or ||"),
    "or-blank-comment": ('true ||\n\n# why\n  GRUB_CMDLINE_LINUX="kho=off"\n', ("", ""), 4, "in a list joined by && or ||"),
    "pipe-newline": ('echo |\n  GRUB_CMDLINE_LINUX="kho=off"\n', ("", ""), 2, "set in a pipeline (|), which runs it in a subshell"),
    "and-here-document": ('[ -e /nonexistent ] <<EOF &&\nbody\nEOF\nGRUB_CMDLINE_LINUX="ro"\n', ("", ""), 4,
                          "in a list joined by && or ||"),
    "background": ('X=kho=off &\nGRUB_CMDLINE_LINUX="$X"\n', ("", ""), 1, "a command run in the background (&)"),
    "background-ours": ('GRUB_CMDLINE_LINUX="ro" & true\n', ("", ""), 1, "a command run in the background (&)"),
    "export-quoted-name": ('export GRUB_CMDLINE_LI""NUX="kho=off"\n', ("kho=off", ""), 1,
                           "export 'GRUB_CMDLINE_LI\"\"NUX=\"kho=off\"', a word that is not a plain NAME or NAME=value"),
    "readonly-quoted-name": ("readonly 'GRUB_CMDLINE_LINUX_DEFAULT'=kho=off\n", ("", "kho=off"), 1,
                             "readonly \"'GRUB_CMDLINE_LINUX_DEFAULT'=kho=off\", a word that is not a plain NAME"),
    "command-eval": ("command eval 'GRUB_CMDLINE_LI''NUX=kho=off'\n", ("kho=off", ""), 1,
                     "command runs a command the module cannot follow"),
    "eval-after-and": ("true && eval 'GRUB_CMDLINE_LI''NUX=kho=off'\n", ("kho=off", ""), 1, "eval evaluates text"),
    "eval-as-a-word": ("echo eval >/dev/null\n", ("", ""), 1, "eval as a word of a command"),
    "dot-as-a-word": ("echo . >/dev/null\n", ("", ""), 1, ". as a word of a command"),
    "arithmetic": ('X=GRUB_CMDLINE_LI\n: $((${X}NUX=7))\n', ("7", ""), 2, "an arithmetic expansion"),
    "function-sets-later": ('f() { X=kho=off; }\nX=ro\nf\nGRUB_CMDLINE_LINUX="$X"\n', ("kho=off", ""), 4,
                            "$X, whose value the module cannot know"),
    "shell-owned": ('PWD=/x\ncd /\nGRUB_CMDLINE_LINUX="$PWD"\n', ("/", ""), 3, "$PWD, whose value the module cannot know"),
    "local-outside-a-function": ('local X=1\nGRUB_CMDLINE_LINUX="ro"\n', None, 1, "local outside a function"),
    "readonly-set-again": ('readonly X=ro\nX=quiet\nGRUB_CMDLINE_LINUX="$X"\n', None, 2, "X, made readonly above, set again"),
    "stray-closer": ('GRUB_CMDLINE_LINUX="ro"\nfi\n', None, 2, "fi where no compound command is open"),
    "bash-function": ('function f {\n  X=kho=off\n}\nGRUB_CMDLINE_LINUX="$X"\n', None, 1, "function, bash's keyword for a function"),
    "locale-string": ('X=$"kho=off"\nGRUB_CMDLINE_LINUX="$X"\n', ("$kho=off", ""), 2, "$X, whose value the module cannot"),
    "continued-name": ('GRUB_CMDLINE_LI\\\nNUX="kho=off"\n', ("kho=off", ""), 1, "GRUB_CMDLINE_LINUX set by a word spelled "
                       "with quotes"),
}


@pytest.mark.parametrize("case", sorted(FIXED))
def test_a_form_the_reader_once_misread_is_refused_naming_line_and_form(tmp_path, case):
    text, computed, line, why = FIXED[case]
    (tmp_path / "grub").write_text(text)
    assert dash([tmp_path])[tmp_path] == computed
    got, refusal = module_reads(tmp_path)
    assert got is None and refusal.startswith(f"{tmp_path / 'grub'} line {line} ("), refusal
    assert why in refusal and 'write it as GRUB_CMDLINE_LINUX="..." on a line of its own' in refusal, refusal


def test_a_list_that_ends_with_its_operator_is_refused(tmp_path):
    (tmp_path / "grub").write_text('GRUB_CMDLINE_LINUX="ro" ||\n# nothing after it\n')
    assert module_reads(tmp_path)[1].startswith(f"{tmp_path / 'grub'} line 1 ('GRUB_CMDLINE_LINUX=\"ro\" ||'): a list that "
                                                "ends with || and no command after it")


def test_the_reproducer_is_refused_by_the_real_module_and_the_file_kept(tmp_path):
    from test_bootloader import run_module  # pylint: disable=import-error,import-outside-toplevel
    grub = tmp_path / "grub"
    grub.write_text(REPRODUCER)
    assert dash([tmp_path])[tmp_path] == ("", "")  # what sh computes: the assignment never runs
    out = run_module(tmp_path, {"bootloader": "grub", "grub_file": str(grub), "regenerate": False})
    assert out["failed"] and out["msg"].startswith(f"{grub} line 2 ('    GRUB_CMDLINE_LINUX=\"console=ttyS0 quiet\"'): "
                                                   "GRUB_CMDLINE_LINUX set in a list joined by && or ||"), out
    assert "outside any if, case, loop, function, list (&&, ||, |) or here-document" in out["msg"]
    assert grub.read_text() == REPRODUCER

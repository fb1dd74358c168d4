"""GRUB files keep their shell meaning: each original and each rewrite is sourced by the real /bin/sh (dash)."""

from __future__ import annotations

import codecs
import errno
import os
import shutil
import subprocess
import time
from pathlib import Path

import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from ansible_collections.kexec.kho.plugins.module_utils._kho import bootloader as B
from ansible_collections.kexec.kho.plugins.module_utils._kho import files
from ansible_collections.kexec.kho.plugins.module_utils._kho import grub_shell as sh
from ansible_collections.kexec.kho.plugins.module_utils._kho.cmdline import GrammarError, apply_kho, check_request, kho_params

from test_bootloader import FakeModule, run_module  # pylint: disable=import-error

GRUB_DIR = Path(__file__).resolve().parents[3] / "fixtures" / "grub"
REGIONS = [{"size": "1M", "align": 4096, "label": "oops"}]
# grub-mkconfig's own loop: the defaults file, then each drop-in that exists, in glob order.
SOURCE = ('{ . ./grub; for x in grub.d/*.cfg; do if [ -e "$x" ]; then . "./$x"; fi; done; } </dev/null >/dev/null 2>&1; '
          'printf "%s\\n%s" "$GRUB_CMDLINE_LINUX" "$GRUB_CMDLINE_LINUX_DEFAULT" >"$OUT"')

# case: what sh computes for (GRUB_CMDLINE_LINUX, GRUB_CMDLINE_LINUX_DEFAULT); None where the module
# manages the file, else (the file, the line and the reason the module gives for refusing it).
TABLE = {
    "debian12": ("", "quiet", None),
    "trixie": ("", "quiet", None),
    "single-quoted": ("ro quiet", "", None),
    "unquoted-plain": ("console=ttyS0,115200", "", None),
    "escaped-quotes": ('console=ttyS0 "acpi_osi=Windows 2020" $5', "", None),
    "export": ("ro", "", None),
    "references": ("pci=noaer ro", "quiet console=tty1 console=ttyS0", None),
    "conflicts": ("kho=on ro", "quiet kho=off reserve_mem=2M:4K:old", None),
    "dropin-wins": ("console=ttyS0", "", None),
    "comments-not-lines": ("ro", "", None),
    "compound-elsewhere": ("ro", "", None),
    "latin1-comment": ("ro", "", None),
    "no-assignment": ("", "", None),
    "unquoted-escape": ("quiet id", "", ("grub", 1, "an unquoted value with characters the shell treats specially")),
    "unquoted-semicolon": ("quiet", "", ("grub", 1, "several assignments or commands on one line")),
    "mixed-quotes": ("foobar baz", "", ("grub", 1, "several quoted and unquoted parts")),
    "command-substitution": ("a b", "", ("grub", 1, "an unquoted expansion")),
    "concatenated-quotes": ("ab", "", ("grub", 1, "several quoted and unquoted parts")),
    "two-assignments": ("a", "kho=off", ("grub", 1, "several assignments or commands on one line")),
    "chained": ("a", "kho=off", ("grub", 1, "several assignments or commands on one line")),
    "before-a-command": ("", "", ("grub", 1, "GRUB_CMDLINE_LINUX set by or before a command (GRUB_CMDLINE_LINUX")),
    "if-false": ("ro", "", ("grub", 3, "GRUB_CMDLINE_LINUX_DEFAULT set inside an if ... fi")),
    "here-document": ("ro", "", ("grub", 3, "GRUB_CMDLINE_LINUX_DEFAULT set inside a here-document")),
    "function": ("ro", "", ("grub", 1, "GRUB_CMDLINE_LINUX_DEFAULT set inside a function")),
    "readonly": ("ro", "", ("grub", 1, "GRUB_CMDLINE_LINUX set by readonly, a form the module does not rewrite")),
    "default-expansion": ("ro kho=off", "", ("grub", 1, "the expansion ${X:-kho=off}")),
    "assigning-expansion": ("ro", "kho=off", ("grub", 2, "GRUB_CMDLINE_LINUX_DEFAULT set by or before a command")),
    "unknown-variable": (" ro", "", ("grub", 1, "$EXTRA, whose value the module cannot know")),
    "continuation": ("ro quiet", "", ("grub", 1, "a backslash-newline continuation")),
    "sourced-file": ("ro", "", ("grub", 2, ". sources a file the module cannot follow")),
    "crlf": ("ro\r", "", ("grub", 2, "several quoted and unquoted parts")),
    "latin1-value": ("ro acpi_osi=\udce9", "", ("grub", 1, "a value that is not UTF-8")),
    "dropin-refused": ("ro", "quiet splash", ("grub.d/60-x.cfg", 2, "an unquoted expansion")),
}


def test_the_table_covers_every_fixture():
    assert sorted(TABLE) == sorted(p.name for p in GRUB_DIR.iterdir() if p.is_dir())


def sourced(directory: Path) -> tuple:
    """What sh computes for both variables, sourcing as grub-mkconfig does, with nothing else in scope."""
    out = directory.parent / f"{directory.name}.out"
    subprocess.run(["env", "-i", f"OUT={out}", "/bin/sh", "-c", SOURCE], cwd=directory, check=True, timeout=10)
    linux, _nl, default = out.read_bytes().decode("utf-8", "surrogateescape").partition("\n")
    out.unlink()
    return linux, default


def snapshot(directory: Path) -> dict:
    """Every file but the backups (a drop-in changed is backed up; grub-mkconfig sources *.cfg only)."""
    return {p.relative_to(directory): p.read_bytes() for p in sorted(directory.rglob("*"))
            if p.is_file() and not p.name.endswith("~")}


def grub_in(tmp_path: Path, case: str) -> tuple:
    """A copy of the case; a NAME.escaped fixture (a CR or a Latin-1 byte, which the sanity tests refuse in the
    repository) becomes NAME, its backslash escapes decoded."""
    directory = tmp_path / case
    shutil.copytree(GRUB_DIR / case, directory)
    for escaped in directory.rglob("*.escaped"):
        escaped.with_suffix("").write_bytes(codecs.escape_decode(escaped.read_bytes())[0])
        escaped.unlink()
    return directory, B.Grub(FakeModule(directory, regenerate=False), str(directory / "grub"), None)


def plan_and_apply(grub, state: str):
    wanted = check_request(kho="on", reserve_mem=REGIONS)
    plan = grub.plan(lambda line: apply_kho(line, state, wanted["kho"], None, "auto", wanted["reserve_mem"]),
                     lambda line: apply_kho(line, "absent"))
    if plan["files"]:
        grub.apply(plan)
    return plan


@pytest.mark.parametrize("case", sorted(TABLE))
def test_sh_computes_what_the_table_says(tmp_path, case):
    directory, _grub = grub_in(tmp_path, case)
    assert sourced(directory) == TABLE[case][:2]


@pytest.mark.parametrize("state", ["present", "absent"])
@pytest.mark.parametrize("case", sorted(c for c, row in TABLE.items() if row[2] is None))
def test_a_managed_file_keeps_its_meaning_plus_the_parameters(tmp_path, case, state):
    directory, grub = grub_in(tmp_path, case)
    before, old = sourced(directory), snapshot(directory)
    plan = plan_and_apply(grub, state)
    after, new = sourced(directory), snapshot(directory)
    assert plan["before"] == " ".join(v.strip() for v in before if v.strip())  # the module's line is the shell's
    assert plan["after"] == " ".join(v.strip() for v in after if v.strip())
    for was, now in zip(before, after):  # each variable says what it said, besides the KHO parameters
        assert B.other_tokens(now) == B.other_tokens(was)
    got = kho_params(plan["after"])
    assert got["invalid"] == [] and got["scratch"] is None
    if state == "present":
        assert got["kho_enabled"] is True and [r["value"] for r in got["reserve_mem"]] == ["1M:4K:oops"]
    else:
        assert got["kho"] is None and got["reserve_mem"] == []
    assert set(new) == set(old)
    for name, data in new.items():  # every other line byte for byte
        changed = [(o, n) for o, n in zip(old[name].split(b"\n"), data.split(b"\n")) if o != n]
        assert all(b"GRUB_CMDLINE_LINUX" in n for _o, n in changed), changed
    assert plan_and_apply(grub, state)["files"] == {}  # and the next run changes nothing


@pytest.mark.parametrize("case", sorted(c for c, row in TABLE.items() if row[2] is not None))
def test_a_file_the_module_does_not_understand_is_refused_naming_the_line(tmp_path, case):
    directory, grub = grub_in(tmp_path, case)
    old = snapshot(directory)
    name, line, why = TABLE[case][2]
    with pytest.raises(B.BootloaderError) as info:
        plan_and_apply(grub, "present")
    assert f"{directory / name} line {line} (" in str(info.value) and why in str(info.value)
    assert 'write it as GRUB_CMDLINE_LINUX="..." on a line of its own' in str(info.value)
    assert snapshot(directory) == old


def test_a_failed_second_write_restores_the_first_file(tmp_path, monkeypatch):
    directory, grub = grub_in(tmp_path, "conflicts")
    old = snapshot(directory)
    real = files.write_atomic

    def write_atomic(path, data, like=None, module=None):
        if path.endswith(".cfg") and b"reserve_mem" not in data:
            raise PermissionError(errno.EPERM, os.strerror(errno.EPERM), path)
        real(path, data, like, module)

    monkeypatch.setattr(files, "write_atomic", write_atomic)
    with pytest.raises(B.BootloaderError) as info:
        plan_and_apply(grub, "present")
    assert str(info.value) == (f"writing {directory}/grub.d/50-region.cfg failed (Operation not permitted); {directory}/grub "
                               "restored as it was, " f"{directory}/grub.d/50-region.cfg not written: every file is as it was")
    assert snapshot(directory) == old


def test_a_restore_that_fails_too_is_said(tmp_path, monkeypatch):
    directory, grub = grub_in(tmp_path, "conflicts")
    calls = []

    def write_atomic(path, data, like=None, module=None):
        calls.append(path)
        if len(calls) > 1:
            raise PermissionError(errno.EPERM, os.strerror(errno.EPERM), path)
        Path(path).write_bytes(data)

    monkeypatch.setattr(files, "write_atomic", write_atomic)
    with pytest.raises(B.BootloaderError, match=r"50-region.cfg failed \(Operation not permitted\); .*/grub could not be "
                                                r"restored \(Operation not permitted\) and holds the new text$"):
        plan_and_apply(grub, "present")


# File contents as a careless or hostile hand writes them: our assignments in every form, shell syntax around
# them, line breaks sh does not know, bytes that are not UTF-8, numbers of thousands of digits.
PIECES = st.sampled_from([
    "GRUB_CMDLINE_LINUX=", "GRUB_CMDLINE_LINUX_DEFAULT=", "export ", "readonly ", "X=", "$X", "$GRUB_CMDLINE_LINUX",
    "${GRUB_CMDLINE_LINUX_DEFAULT}", "${X:-kho=off}", "${GRUB_CMDLINE_LINUX:=a}", "$(echo a)", "`echo b`", "kho=on",
    "kho=off", 'kho="on"', "reserve_mem=1M:4K:oops", "reserve_mem=" + "9" * 5000 + ":0:a", "kho_scratch=50%", "quiet",
    " ", "\t", "\n", "\r", "\f", "\u2028", "\\", "\\\n", '"', "'", ";", "&", "|", "(", ")", "{", "}", "#", "<<EOF\n",
    "EOF\n", "if true; then\n", "fi\n", "case a in a) ", ";; esac\n", "for i in 1; do ", "done\n", "f() ", ". ./x\n",
    "=", "~", "*", "\xe9", "\udce9",
])
CONTENT = st.lists(PIECES, max_size=40).map("".join)


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(main=CONTENT, dropin=st.none() | CONTENT)
def test_no_file_content_gets_past_the_refusal_into_a_traceback(tmp_path, main, dropin):
    """Any content: refused with BootloaderError (or the line-length GrammarError), or rewritten with its meaning."""
    directory = Path(tmp_path / "fuzz")
    shutil.rmtree(directory, ignore_errors=True)
    (directory / "grub.d").mkdir(parents=True)
    (directory / "grub").write_bytes(main.encode("utf-8", "surrogateescape"))
    if dropin is not None:
        (directory / "grub.d" / "50-x.cfg").write_bytes(dropin.encode("utf-8", "surrogateescape"))
    grub = B.Grub(FakeModule(directory, regenerate=False), str(directory / "grub"), None)
    try:
        plan = plan_and_apply(grub, "present")
    except (B.BootloaderError, GrammarError) as exc:
        event(f"refused: {str(exc).partition('): ')[2][:30] or str(exc)[:30]}")
        return
    event("rewritten")
    assert kho_params(plan["after"])["kho_enabled"] is True


DIGITS = "9" * 5000  # past Python's int() limit of 4300 digits


def test_a_huge_number_in_an_option_or_a_file_is_refused_not_a_traceback(tmp_path):
    (tmp_path / "grub").write_text(f'GRUB_CMDLINE_LINUX="ro reserve_mem={DIGITS}:0:a"\n')
    out = run_module(tmp_path, {"bootloader": "grub", "grub_file": str(tmp_path / "grub"), "regenerate": False})
    assert out["failed"] and "line 1: reserve_mem= has a number of 5000 digits, not a size; the form is" in out["msg"], out
    out = run_module(tmp_path, {"bootloader": "grub", "grub_file": str(tmp_path / "grub"), "regenerate": False,
                                "reserve_mem": [{"size": DIGITS, "label": "a"}]})
    assert out["failed"] and out["msg"].startswith("reserve_mem[0].size has a number of 5000 digits"), out
    (tmp_path / "kcmd").write_bytes(b"root=/dev/sda acpi_osi=\xe9\n")
    out = run_module(tmp_path, {"bootloader": "kernel-install", "kernel_cmdline_file": str(tmp_path / "kcmd")})
    assert out["failed"] and "kcmd is not UTF-8 (byte 0xe9 at offset 23)" in out["msg"], out


def test_grubby_kho_quoted_is_rewritten_plain(tmp_path):
    mod = FakeModule(tmp_path, bins={"grubby"})
    mod.outputs["grubby"] = 'index=0\nkernel="/boot/vmlinuz"\nargs="ro kho=\\"on\\" quiet"\n'.replace('\\"', '"')
    backend = B.select(mod, "")
    wanted = check_request(kho="on")
    plan = backend.plan(lambda line: apply_kho(line, "present", wanted["kho"]), lambda line: apply_kho(line, "absent"))
    assert plan["entries"][0]["after"] == "ro kho=on quiet"
    backend.apply(plan)
    assert mod.commands[-1] == ["/usr/sbin/grubby", "--update-kernel=0", "--args=kho=on"]


def test_the_diff_ends_with_the_effective_line(tmp_path):
    directory, _grub = grub_in(tmp_path, "conflicts")
    out = run_module(tmp_path, {"bootloader": "grub", "grub_file": str(directory / "grub"), "regenerate": False,
                                "_ansible_diff": True, "_ansible_check_mode": True})
    assert [d["before_header"] for d in out["diff"]] == [str(directory / "grub"), str(directory / "grub.d/50-region.cfg"),
                                                         f"{directory / 'grub'} (command line)"]
    assert out["diff"][-1]["after"] == "kho=on ro quiet\n" and out["cmdline_after"] == "kho=on ro quiet"


def test_a_file_at_the_size_cap_is_read_in_bounded_time(tmp_path):
    """The reader's cost grows with the file, not with its square: a million commands were 43 s, and a list
    before 250,000 blank lines an hour (the BLS check's regex), before #37."""
    started = time.monotonic()
    sh.Scan("true &&\n X=1\n" * ((1 << 20) // 14), {var: "" for var in sh.VARS})
    assert time.monotonic() - started < 20
    (tmp_path / "grub").write_text("true &&" + "\n" * (1 << 18) + "X=1\n")
    grub = B.Grub(FakeModule(tmp_path, regenerate=False), str(tmp_path / "grub"), None)
    started = time.monotonic()
    grub.plan(lambda line: apply_kho(line, "present", "on"), lambda line: apply_kho(line, "absent"))
    assert time.monotonic() - started < 20

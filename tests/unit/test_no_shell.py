"""No module or plugin starts a shell with a string: every command is an argument list."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PLUGINS = Path(__file__).resolve().parents[2] / "plugins"
SOURCES = sorted(PLUGINS.rglob("*.py"))


def offences(source: str) -> list:
    found = []
    for node in ast.walk(ast.parse(source)):
        if not isinstance(node, ast.Call):
            continue
        for kw in node.keywords:
            if kw.arg in ("shell", "use_unsafe_shell") and not (isinstance(kw.value, ast.Constant) and not kw.value.value):
                found.append(f"line {node.lineno}: {kw.arg}=")
        name = node.func.attr if isinstance(node.func, ast.Attribute) else getattr(node.func, "id", "")
        if name in ("run_command", "Popen", "run", "call", "check_call", "check_output", "system") and node.args:
            first = node.args[0]
            if isinstance(first, (ast.JoinedStr, ast.BinOp)) or (isinstance(first, ast.Constant) and isinstance(first.value, str)):
                found.append(f"line {node.lineno}: {name}() given a string")
    return found


def test_the_checker_catches_what_it_should():
    bad = ("module.run_command(f'kexec -l {path}')\nsubprocess.run('ls ' + x, shell=True)\n"
           "module.run_command(argv, use_unsafe_shell=True)\nos.system('reboot')\n")
    assert len(offences(bad)) == 5
    assert offences("module.run_command([kexec, '-s', '-l', path])\nsubprocess.run(argv, check=True)\n") == []


@pytest.mark.parametrize("path", SOURCES, ids=[str(p.relative_to(PLUGINS)) for p in SOURCES])
def test_plugin_builds_no_shell_string(path):
    assert offences(path.read_text()) == []

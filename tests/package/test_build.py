"""The collection builds, installs into a fresh path, and ansible-doc renders every plugin in full."""

from __future__ import annotations

import ast
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent


def _run(argv, **kw):
    env = {k: v for k, v in os.environ.items() if k != "ANSIBLE_COLLECTIONS_PATH"}
    env.update(ANSIBLE_NOCOLOR="1", ANSIBLE_FORCE_COLOR="0", COLUMNS="2000", **kw.pop("env", {}))
    return subprocess.run(argv, check=True, capture_output=True, text=True, env=env, **kw)


@pytest.fixture(scope="module")
def installed(shipped):
    """The tarball built and installed once for the package tests (conftest.py's shipped)."""
    dest, tarball, _names = shipped
    return dest, tarball


def _doc(module_path: Path) -> dict:
    tree = ast.parse(module_path.read_text())
    docs = {t.targets[0].id: ast.literal_eval(t.value) for t in tree.body
            if isinstance(t, ast.Assign) and getattr(t.targets[0], "id", "") in ("DOCUMENTATION", "RETURN")}
    return {k: yaml.safe_load(v) for k, v in docs.items()}


def _return_keys(spec: dict, prefix: str = "") -> list:
    keys = []
    for name, entry in (spec or {}).items():
        keys.append(name)
        keys += _return_keys(entry.get("contains"), prefix + name + ".")
    return keys


def test_tarball_leaves_out_what_is_not_shipped(installed):
    _dest, tarball = installed
    names = subprocess.run(["tar", "-tzf", str(tarball)], check=True, capture_output=True, text=True).stdout
    assert "plugins/modules/kho_facts.py" in names
    assert "tests/lab/" not in names and ".venv" not in names and "Makefile" not in names


@pytest.mark.parametrize("module", sorted(p.stem for p in (ROOT / "plugins" / "modules").glob("kho_*.py")))
def test_ansible_doc_renders_module(installed, module):
    dest, _tarball = installed
    out = _run([str(BIN / "ansible-doc"), f"kexec.kho.{module}"], env={"ANSIBLE_COLLECTIONS_PATH": str(dest)}).stdout
    docs = _doc(ROOT / "plugins" / "modules" / f"{module}.py")
    assert f"kexec.kho.{module}" in out
    for option in docs["DOCUMENTATION"].get("options", {}):
        assert option in out, f"option {option} missing from ansible-doc {module}"
    for option in ("mount_debugfs", "_internal") if module == "kho_facts" else ():
        assert option in out  # from the doc fragment
    for key in _return_keys(docs["RETURN"]):
        assert key in out, f"return value {key} missing from ansible-doc {module}"


@pytest.mark.parametrize("name", sorted(p.stem for p in (ROOT / "plugins" / "filter").glob("*.yml")))
def test_ansible_doc_renders_filter(installed, name):
    dest, _tarball = installed
    out = _run([str(BIN / "ansible-doc"), "-t", "filter", f"kexec.kho.{name}"],
               env={"ANSIBLE_COLLECTIONS_PATH": str(dest)}).stdout
    spec = yaml.safe_load((ROOT / "plugins" / "filter" / f"{name}.yml").read_text())
    assert f"kexec.kho.{name}" in out and "EXAMPLES" in out and "RETURN VALUES" in out
    for option in spec["DOCUMENTATION"]["options"]:
        assert option in out

"""The collection as a user gets it: built into a tarball and installed into a fresh path, once per session."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent


def run(argv, check=True, **kw):
    """Run a tool from this venv against nothing but the collections and settings given in env."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("ANSIBLE_", "MOLECULE_", "KHO_"))}
    env.update(PATH=f"{BIN}:{os.environ['PATH']}", ANSIBLE_NOCOLOR="1", ANSIBLE_FORCE_COLOR="0", NO_COLOR="1",
               COLUMNS="2000", **kw.pop("env", {}))
    return subprocess.run(argv, check=check, capture_output=True, text=True, env=env, **kw)


@pytest.fixture(scope="session")
def shipped(tmp_path_factory):
    """(the collections path it is installed in, the tarball, the tarball's file names)"""
    dist = tmp_path_factory.mktemp("dist")
    run([str(BIN / "ansible-galaxy"), "collection", "build", "--output-path", str(dist), str(ROOT)])
    (tarball,) = dist.glob("kexec-kho-*.tar.gz")
    dest = tmp_path_factory.mktemp("collections")
    run([str(BIN / "ansible-galaxy"), "collection", "install", "-p", str(dest), str(tarball)])
    names = set(run(["tar", "-tzf", str(tarball)]).stdout.split())
    return dest, tarball, names

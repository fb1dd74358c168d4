"""The kernel config fragment the collection ships (files/kho.config): in the tarball, one home with the lab's, named
where a host lacks KHO."""

from __future__ import annotations

import fnmatch
import re
from pathlib import Path

import yaml

from ansible_collections.kexec.kho.plugins.module_utils._kho import facts

ROOT = Path(__file__).resolve().parents[2]
SHIPPED = ROOT / "files" / "kho.config"
LAB = ROOT / "tests" / "lab" / "kho-lab.config"


def options(path: Path) -> list:
    return [line for line in path.read_text().splitlines() if line and not line.startswith("#")]


def test_every_line_of_the_shipped_fragment_is_the_labs():
    # The lab's fragment keys the lab kernel's cache: it stays as it is, and holds the shipped one's lines as well.
    lab = set(options(LAB))
    shipped = options(SHIPPED)
    assert shipped and all(re.fullmatch(r"CONFIG_\w+=(y|m|n|\d+|\"[^\"]*\")", line) for line in shipped)
    assert [line for line in shipped if line not in lab] == []
    assert "CONFIG_KEXEC_HANDOVER=y" in shipped and "CONFIG_KEXEC_HANDOVER_DEBUGFS=y" in shipped


def test_the_lab_only_parts_are_left_out():
    shipped = options(SHIPPED)
    for lab_only in ("CONFIG_TEST_KEXEC_HANDOVER", "CONFIG_MODULES", "CONFIG_RANDOMIZE_BASE", "CONFIG_DRM", "CONFIG_64BIT"):
        assert not any(line.startswith(lab_only + "=") for line in shipped), lab_only


def test_the_fragment_is_in_what_galaxy_builds():
    ignored = yaml.safe_load((ROOT / "galaxy.yml").read_text())["build_ignore"]
    for shipped in ("files/kho.config", "docs/kernel.md", "requirements.txt"):
        assert not any(fnmatch.fnmatch(shipped, pattern) or shipped.startswith(pattern.rstrip("/") + "/")
                       for pattern in ignored), shipped


def test_a_kernel_without_kho_is_told_what_to_do_next():
    state = facts.support(None, "none", True, {"kho_enabled": None}, {"CONFIG_KEXEC_HANDOVER": "n"})
    assert state["supported"] is False
    assert state["reason"].startswith("the running kernel is built without CONFIG_KEXEC_HANDOVER")
    for named, path in (("files/kho.config", SHIPPED), ("docs/kernel.md", ROOT / "docs" / "kernel.md"),
                        ("kexec.kho.enable", ROOT / "playbooks" / "enable.yml")):
        assert named in state["reason"] and path.is_file()

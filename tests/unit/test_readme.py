"""What the README tells a newcomer holds: the first screen says what a host needs and where to get it, the version a
requirements file pins admits this one, the managed host's Python is the one tested, and the role advertises only
the platforms a lab guest proves."""

from __future__ import annotations

import re
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[2]
README = (ROOT / "README.md").read_text()
FIRST_SCREEN = "\n".join(README.splitlines()[:40])


def version(text: str) -> tuple:
    return tuple(int(x) for x in text.split("."))


def test_the_first_screen_says_what_a_host_needs_and_where_to_get_it():
    for needed in ("CONFIG_KEXEC_HANDOVER", "kho=on", "files/kho.config", "docs/kernel.md", "No stock distribution kernel"):
        assert needed in FIRST_SCREEN, needed
    assert (ROOT / "files" / "kho.config").is_file() and (ROOT / "docs" / "kernel.md").is_file()


def test_the_requirements_files_of_the_readme_admit_this_version():
    ours = version(yaml.safe_load((ROOT / "galaxy.yml").read_text())["version"])
    ranges = re.findall(r'version: ">=([\d.]+),<([\d.]+)"', README)
    assert ranges
    for low, high in ranges:
        assert version(low) <= ours < version(high), (low, high)


def test_the_managed_hosts_python_is_the_one_tested():
    floor = re.search(r"\| managed host \| Python (3\.\d+) or later for the modules", README).group(1)
    config = yaml.safe_load((ROOT / "tests" / "config.yml").read_text())
    assert config["modules"]["python_requires"] == f">={floor}"
    tried = re.search(r"for v in ([\d. ]+); do", (ROOT / "tests" / "utils" / "target-pythons.sh").read_text()).group(1)
    assert tried.split()[0] == floor


def test_the_role_advertises_only_what_a_lab_guest_proves():
    role = yaml.safe_load((ROOT / "roles" / "handover" / "meta" / "main.yml").read_text())
    proven = next(line for line in README.splitlines() if line.startswith("| distributions |")).split("|")[2]
    for platform in role["galaxy_info"]["platforms"]:
        for release in platform["versions"]:
            assert f"{platform['name']} {release}" in proven, f"{platform['name']} {release}"


def test_the_readme_says_where_requirements_txt_is_after_an_install():
    assert "pip install -r ~/.ansible/collections/ansible_collections/kexec/kho/requirements.txt" in README
    assert "ansible-galaxy collection list kexec.kho" in README

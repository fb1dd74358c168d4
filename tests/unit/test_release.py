"""A version protects a pin: a breaking change is never released under a version already released, the next version
follows the breaking changes, and every version_added names a released or the next version (docs/releasing.md)."""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
BREAKING = ("breaking_changes", "removed_features")


def version(text) -> tuple:
    return tuple(int(x) for x in str(text).split("."))


def galaxy_version() -> str:
    return str(yaml.safe_load((ROOT / "galaxy.yml").read_text())["version"])


def released() -> dict:
    return yaml.safe_load((ROOT / "changelogs" / "changelog.yaml").read_text())["releases"] or {}


def breaking_fragments(fragments: Path = ROOT / "changelogs" / "fragments") -> list:
    return sorted(p.name for p in fragments.glob("*.y*ml")
                  if any((yaml.safe_load(p.read_text()) or {}).get(section) for section in BREAKING))


def pin_problems(ours: str, releases: dict, breaking: list) -> list:
    """What is wrong with releasing ``breaking`` fragments as ``ours``, given the releases made."""
    if not releases:
        return []
    last = max(releases, key=version)
    problems = []
    if version(ours) < version(last):
        problems.append(f"galaxy.yml's {ours} is older than the last release, {last}")
    if breaking and ours in releases:
        problems.append(f"{', '.join(breaking)}: breaking, unreleased, while galaxy.yml's {ours} is released already "
                        "(raise the version: docs/releasing.md)")
    elif breaking:
        major, minor = version(ours)[:2]
        bumped = (major, minor) > version(last)[:2] if version(last)[0] == 0 else major > version(last)[0]
        if not bumped:
            problems.append(f"{', '.join(breaking)}: a breaking change needs {'a minor' if major == 0 else 'a major'} "
                            f"version above {last}, not {ours}")
    return problems


def test_no_breaking_change_waits_under_a_released_version():
    assert pin_problems(galaxy_version(), released(), breaking_fragments()) == []


@pytest.mark.parametrize("ours, releases, breaking, wrong", [
    ("0.3.0", ["0.1.0", "0.2.0", "0.3.0"], ["29-one-home.yml"], "is released already"),  # issue 39's tarball
    ("0.3.1", ["0.3.0"], ["29-one-home.yml"], "a breaking change needs a minor version above 0.3.0"),
    ("1.2.1", ["1.2.0"], ["x.yml"], "needs a major version"),
    ("0.2.0", ["0.3.0"], [], "older than the last release"),
])
def test_the_check_catches_a_version_that_breaks_a_pin(ours, releases, breaking, wrong):
    problems = pin_problems(ours, dict.fromkeys(releases, {}), breaking)
    assert any(wrong in p for p in problems), problems


@pytest.mark.parametrize("ours, releases, breaking", [
    ("0.4.0", ["0.3.0"], ["29-one-home.yml"]), ("0.3.1", ["0.3.0"], []), ("0.3.0", ["0.3.0"], []),
    ("2.0.0", ["1.4.2"], ["x.yml"]),
])
def test_the_check_lets_a_version_that_keeps_pins_pass(ours, releases, breaking):
    assert pin_problems(ours, dict.fromkeys(releases, {}), breaking) == []


def test_a_breaking_fragment_is_found(tmp_path):
    (tmp_path / "1-a.yml").write_text("breaking_changes:\n  - x\n")
    (tmp_path / "2-b.yml").write_text("minor_changes:\n  - y\n")
    assert breaking_fragments(tmp_path) == ["1-a.yml"]


def _docs():
    """(file, parsed doc) of every documented plugin, fragment and role spec."""
    for path in sorted((ROOT / "plugins").rglob("*.py")):
        tree = ast.parse(path.read_text())
        for node in tree.body:
            targets = [t.id for t in getattr(node, "targets", []) if isinstance(t, ast.Name)]
            if isinstance(node, ast.Assign) and set(targets) & {"DOCUMENTATION", "RETURN"}:
                yield path, yaml.safe_load(ast.literal_eval(node.value))
            if isinstance(node, ast.ClassDef) and path.parent.name == "doc_fragments":
                for item in node.body:
                    if isinstance(item, ast.Assign) and isinstance(getattr(item.value, "value", None), str):
                        yield path, yaml.safe_load(item.value.value)
    for path in sorted((ROOT / "plugins" / "filter").glob("*.yml")):
        doc = yaml.safe_load(path.read_text())
        yield path, {k: doc.get(k) for k in ("DOCUMENTATION", "RETURN")}
    for path in sorted((ROOT / "roles").glob("*/meta/argument_specs.yml")):
        yield path, yaml.safe_load(path.read_text())


def _versions_added(node):
    if isinstance(node, dict):
        for key, value in node.items():
            if key == "version_added" and value is not None:
                yield str(value)
            else:
                yield from _versions_added(value)
    elif isinstance(node, list):
        for value in node:
            yield from _versions_added(value)


def test_every_version_added_is_released_or_the_next():
    allowed = set(released()) | {galaxy_version()}
    wrong = sorted({f"{path.relative_to(ROOT)}: {v}" for path, doc in _docs() for v in _versions_added(doc)
                    if v not in allowed})
    assert wrong == []


def test_the_changelog_has_every_release():
    text = (ROOT / "CHANGELOG.rst").read_text()
    assert [v for v in released() if not re.search(rf"^v{re.escape(v)}\n=+$", text, re.M)] == []


def test_the_release_is_cut_as_docs_releasing_says():
    assert re.search(r"^release-notes:", (ROOT / "Makefile").read_text(), re.M)
    assert "make release-notes" in (ROOT / "docs" / "releasing.md").read_text()


TAGS = ROOT / "tests" / "output" / "release-tags.txt"  # written by tests/utils/layout.sh from the source's tags


def test_every_release_is_tagged_at_its_version():
    """Each version changelogs/changelog.yaml lists as released has a git tag of that name, on a commit whose
    galaxy.yml names that version; and no tag names a version that is not released."""
    if not TAGS.exists():
        pytest.skip("no tags recorded: run from a layout of a git checkout (tests/utils/layout.sh); a tarball has none")
    tags = dict(line.split(" ", 1) for line in TAGS.read_text().splitlines() if " " in line)
    if not tags:
        pytest.skip("the checkout has no tags (a clone made with --no-tags): fetch them to check the releases")
    assert {v: tags.get(v) for v in released() if tags.get(v) != v} == {}, "a release without its tag, or tagged off"
    assert sorted(set(tags) - set(released())) == []

"""The target check by version, on the recorded image facts of each release the lab builds (#35).

tests/fixtures/releases/images.json: image.inspect of the lab's kernels of 7.3.4, 7.2.13 and 7.3.0-rc7, and of
7.3.4 patched to write and accept the next version of one format (tests/lab/record_images.py records it).  What a
kernel sends is what its own image writes: its compatibles.
"""

from __future__ import annotations

import itertools
import json
from pathlib import Path

import pytest

from ansible_collections.kexec.kho.plugins.module_utils._kho import compat, image

IMAGES = json.loads((Path(__file__).resolve().parents[3] / "fixtures" / "releases" / "images.json").read_text())
RELEASES = [name for name in IMAGES if "+" not in name]
MOVED_ON = [name for name in IMAGES if "+" in name]


def sends(name: str) -> dict:
    return {image.family(t): t for t in IMAGES[name]["compatibles"]}


@pytest.mark.parametrize("source,target", list(itertools.permutations(RELEASES, 2)))
def test_every_pair_of_the_labs_releases_reads_what_the_other_sends(source, target):
    support = compat.check(sends(source), IMAGES[target], sessions_held=True)
    assert support["status"] == "compatible" and support["missing"] == [] and support["sides"] == [], support


@pytest.mark.parametrize("variant", MOVED_ON)
def test_a_format_that_moved_on_is_refused_naming_both_sides_in_both_directions(variant):
    new = variant.split("+", 1)[1]
    old = sends("7.3.4")[image.family(new)]
    upgrade = compat.check(sends("7.3.4"), IMAGES[variant], sessions_held=True)
    assert upgrade["status"] == "incompatible" and upgrade["missing"] == [old], upgrade
    assert upgrade["sides"] == [f"sends {old}, target accepts {new}"], upgrade
    assert f"sends {old}, target accepts {new}" in upgrade["msg"] and upgrade["consequences"], upgrade
    assert compat.refusal(upgrade, True, "refuse") and compat.refusal(upgrade, True, "report") is None
    back = compat.check(sends(variant), IMAGES["7.3.4"], sessions_held=True)  # the way back from that release
    assert back["sides"] == [f"sends {new}, target accepts {old}"], back


def test_a_target_known_only_by_its_config_names_the_family_it_lacks():
    target = {"path": "/boot/vmlinuz-x", "release": "7.3.4", "readable": False, "compatibles": [],
              "config": {"CONFIG_LIVEUPDATE_MEMFD": "n"}, "config_source": "/boot/config-x"}
    support = compat.check(sends("7.3.4"), target, sessions_held=True)
    assert support["sides"] == ["sends memfd-v2, target accepts no memfd (its config)"], support

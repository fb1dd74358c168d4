"""module_utils/_kho/compat.py: whether a target reads what the running kernel hands over, from the
running kernel's blobs and the target's image; on the recorded image facts of each release the lab builds (#35)"""

from __future__ import annotations

import base64
import itertools
import json
from pathlib import Path


import kimage
from fakehost import running_fixture  # noqa: F401  pylint: disable=import-error,unused-import  # tests/: a fixture
from kimage import CONFIG, write  # pylint: disable=import-error  # tests/
import pytest

from ansible_collections.kexec.kho.plugins.module_utils._kho import compat, image, liveupdate


SESSIONS = {"sessions": [{"name": "kexec_simple_state", "pid": 167}]}


def test_what_the_running_kernel_hands_over_is_read_from_its_blobs(running, tmp_path):
    needed = compat.handed_over(running, None, write(tmp_path, "running"))
    assert needed["memblock"] == "memblock-v1" and needed["reserve-mem"] == "reserve-mem-v1" and needed["kho"] == "kho-v4"
    assert "memfd" not in needed
    assert compat.handed_over(running, SESSIONS, write(tmp_path, "running"))["memfd"] == "memfd-v2"


@pytest.mark.parametrize("tokens, missing", [
    (kimage.LAB_TOKENS, []),
    (("kho-v4", "memblock-v1", "reserve-mem-v1", "luo-v5"), ["memfd-v2"]),
    (("kho-v4", "memblock-v1", "reserve-mem-v1"), ["memfd-v2"]),
    (("kho-v3", "memblock-v1", "reserve-mem-v1", "luo-v5", "memfd-v2"), ["kho-v4"]),
])
def test_a_target_lacking_what_is_handed_over_is_refused_naming_it(running, tmp_path, tokens, missing):
    needed = compat.handed_over(running, SESSIONS, write(tmp_path, "running"))
    support = compat.check(needed, image.inspect(write(tmp_path, "target", tokens=tokens)), True)
    assert support["missing"] == missing and support["status"] == ("incompatible" if missing else "compatible")
    why = compat.refusal(support, True, "refuse")
    assert (why is None) == (not missing)
    if missing:
        assert missing[0] in why and "target_check: report" in why and support["consequences"]
        assert compat.refusal(support, True, "report") is None


def test_an_unreadable_target_is_unknown_refused_only_where_sessions_are_held(running, tmp_path):
    needed = compat.handed_over(running, None, write(tmp_path, "running"))
    support = compat.check(needed, image.inspect(write(tmp_path, "target", compression="lz4")), False)
    assert support["status"] == "unknown" and compat.refusal(support, False, "refuse") is None
    assert "LUO sessions are held" in compat.refusal(compat.check(needed, image.inspect(
        write(tmp_path, "target", compression="lz4")), True), True, "refuse")


def test_an_unreadable_target_whose_config_lacks_a_handler_is_incompatible(running, tmp_path):
    (tmp_path / "config-7.3.4").write_text(CONFIG)
    needed = compat.handed_over(running, SESSIONS, write(tmp_path, "running"))
    target = image.inspect(write(tmp_path, "target", compression="lz4"), boot=str(tmp_path))
    support = compat.check(needed, target, True)
    assert support["status"] == "incompatible" and support["missing"] == ["memfd-v2"]


def test_the_luo_entry_is_handed_over_only_where_something_rides_on_it(running, tmp_path, fixtures):
    luo = fixtures / "liveupdate" / "out_sub_fdts_LUO"
    (tmp_path / "host" / "debug" / "kho" / "out" / "sub_fdts" / "LUO").write_bytes(luo.read_bytes())
    no_luo = write(tmp_path, "target", tokens=("kho-v4", "memblock-v1", "reserve-mem-v1"))
    quiet = compat.handed_over(running, {"sessions": []}, write(tmp_path, "running"))
    assert "luo" not in quiet and compat.check(quiet, image.inspect(no_luo), False)["status"] == "compatible"
    held = compat.handed_over(running, SESSIONS, write(tmp_path, "running"))
    assert held["luo"] == "luo-v5" and compat.check(held, image.inspect(no_luo), True)["missing"] == ["luo-v5", "memfd-v2"]
    units = {"systemd": {"preserving_units": [{"unit": "kho-cache.service", "fd_store": 1}]}}
    assert compat.handed_over(running, units, write(tmp_path, "running"))["luo"] == "luo-v5"


# ---------------------------------------------------------------- by version, on the recorded image facts (#35)
#
# The target check on each release the lab builds. tests/fixtures/releases/images.json: image.inspect of the lab's
# kernels of 7.3.4, 7.2.13 and 7.3.0-rc7, and of 7.3.4 patched to write and accept the next version of one format (tests/lab/record_images.py records it); and
# facts-REL.json: kho_facts with every blob (include_raw) on a lab guest running REL with the LUO selftest's sessions
# held, right before its handover in test_releases.py's chain (build-lab/logs/releases/).

IMAGES_DIR = Path(__file__).resolve().parents[3] / "fixtures" / "releases"
IMAGES = json.loads((IMAGES_DIR / "images.json").read_text())
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


# ---------------------------------------------------------------- what each release sends, recorded on a lab guest

FACTS = {rel: json.loads((IMAGES_DIR / f"facts-{rel}.json").read_text()) for rel in ("7.2.13", "7.3.0-rc7", "7.3.4")}
IMAGE_OF = {"7.2.13": "7.2.13", "7.3.0-rc7": "7.3-rc7", "7.3.4": "7.3.4"}


class Recorded:
    """The host as compat.handed_over reads it, from kho_facts' raw blobs recorded on a lab guest (include_raw)."""

    kho, out_dir, in_dir = "kho", "kho/out", "kho/in"

    def __init__(self, facts: dict):
        self.raw = {k: base64.b64decode(v) for k, v in facts["raw"].items()}

    def read_bytes(self, path: str) -> bytes:
        if path[len("kho/"):] not in self.raw:
            raise FileNotFoundError(path)
        return self.raw[path[len("kho/"):]]

    def blobs(self, directory: str) -> dict:
        prefix = directory[len("kho/"):] + "/"
        return {k[len(prefix):]: v for k, v in self.raw.items() if k.startswith(prefix)}

    def exists(self, path: str) -> bool:
        return True


@pytest.mark.parametrize("release", sorted(FACTS))
def test_what_each_release_sent_with_sessions_held_is_what_the_others_read(release, monkeypatch):
    facts = FACTS[release]
    assert liveupdate.held_sessions(facts["liveupdate"]), facts["liveupdate"]  # the selftest's stage 1 held them
    monkeypatch.setattr(image, "inspect", lambda _path: IMAGES[IMAGE_OF[release]])  # the running image, recorded
    sent = compat.handed_over(Recorded(facts), facts["liveupdate"], f"/boot/vmlinuz-{release}")
    assert sent == {"kho": "kho-v4", "luo": "luo-v5", "memblock": "memblock-v1", "memfd": "memfd-v2",
                    "reserve-mem": "reserve-mem-v1"}, sent
    for target in RELEASES:
        assert compat.check(sent, IMAGES[target], True)["status"] == "compatible", target
    for variant in MOVED_ON:
        assert compat.check(sent, IMAGES[variant], True)["status"] == "incompatible", variant

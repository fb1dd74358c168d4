"""Test-wide set-up: import the collection from its ansible_collections/ layout."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
# Running from build/ansible_collections/kexec/kho: put build/ on sys.path.
if ROOT.parents[1].name == "ansible_collections":
    sys.path.insert(0, str(ROOT.parents[2]))
sys.path.insert(0, str(ROOT / "tests"))

SHARED = Path(os.environ.get("KHO_SHARED", ROOT.parent / "shared"))
FIXTURES = SHARED / "fixtures" / "kho-7.3.4"


@pytest.fixture(scope="session")
def fixtures() -> Path:
    if not FIXTURES.is_dir():
        pytest.fail(f"the shared fixtures are missing at {FIXTURES}; set KHO_SHARED to the shared/ folder")
    return FIXTURES

"""molecule test on the collection's scenario: a real KHO guest from the lab."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from test_targets import COLLECTION

pytestmark = pytest.mark.lab_full  # make test-lab; the lean tier is in test_role and test_targets


def test_molecule_default_scenario(lab_reason, tmp_path):
    if lab_reason:
        pytest.skip(f"the KHO lab cannot run here: {lab_reason}")
    env = dict(os.environ, PATH=f"{Path(sys.executable).parent}:{os.environ['PATH']}",
               ANSIBLE_COLLECTIONS_PATH=str(COLLECTION.parents[2]), ANSIBLE_NOCOLOR="1", NO_COLOR="1",
               ANSIBLE_LOCAL_TEMP=str(tmp_path / "ansible-local"), ANSIBLE_CALLBACKS_ENABLED="kexec.kho.kho_report")
    proc = subprocess.run(["molecule", "test", "-s", "default"], cwd=COLLECTION / "extensions",
                          capture_output=True, text=True, env=env, check=False, timeout=1200)
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, out[-8000:]
    assert "skipping: no hosts matched" not in out
    assert "ok: [molecule-0]" in out and "KHO HANDOVER SUMMARY" in out and "molecule-0: verified" in out

"""The tiers say what ran: a stage that cannot run here is 'skipped' with its reason, never 'passed'; a lab tier that
passed no test where the lab can run fails."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

UTILS = Path(__file__).resolve().parents[2] / "utils"
sys.path.insert(0, str(UTILS))

import ran  # noqa: E402
import tier  # noqa: E402

JUNIT = '<testsuites><testsuite name="pytest" tests="{t}" failures="0" errors="0" skipped="{s}"/></testsuites>'


def test_junit_counts(tmp_path):
    (tmp_path / "j.xml").write_text(JUNIT.format(t=4, s=4))
    assert ran.counts(tmp_path / "j.xml") == {"tests": 4, "failures": 0, "errors": 0, "skipped": 4, "passed": 0}


@pytest.mark.parametrize("tests, skipped, lab, rc", [(4, 4, "", 1), (4, 0, "", 0), (4, 4, "KHO_LAB=0 is set", 0)])
def test_a_lab_tier_that_passed_nothing_fails_where_the_lab_can_run(tmp_path, monkeypatch, tests, skipped, lab, rc):
    (tmp_path / "j.xml").write_text(JUNIT.format(t=tests, s=skipped))
    monkeypatch.setattr(ran.subprocess, "run", lambda *a, **k: subprocess.CompletedProcess(a, 0, stdout=lab + "\n"))
    monkeypatch.setenv("KHO_SKIP_DIR", str(tmp_path / "skips"))
    monkeypatch.setattr(sys, "argv", ["ran.py", str(tmp_path / "j.xml"), "lab-lean"])
    assert ran.main() == rc
    assert (tmp_path / "skips" / "lab-lean").exists() == bool(lab)


def test_a_stage_that_records_a_skip_is_shown_skipped_with_its_reason(tmp_path, monkeypatch):
    monkeypatch.setattr(tier, "SKIPS", tmp_path)
    script = f"mkdir -p {tmp_path} && echo 'no Python 3.10 here' > {tmp_path}/oldest"
    seconds, result = tier.run(["sh", "-c", script, "sh"], "oldest")
    assert result == "skipped: no Python 3.10 here"
    assert tier.run(["sh", "-c", "exit 0", "sh"], "oldest")[1] == "passed"  # the reason of a run before is gone
    assert tier.run(["sh", "-c", "exit 3", "sh"], "oldest")[1] == "FAILED (rc 3)"

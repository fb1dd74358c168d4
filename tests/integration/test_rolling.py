"""A rolling handover of two lab guests, and its HTML report rendered in headless Chromium."""

from __future__ import annotations

import shutil
import subprocess

import pytest
from test_role import handover

pytestmark = pytest.mark.lab_full  # make test-lab; the lean tier is in test_role and test_targets


@pytest.fixture(scope="module")
def rolling(module_lab_factory, tmp_path_factory):
    """One rolling handover of two guests, serial 1, shared by the tests that judge it."""
    tmp_path = tmp_path_factory.mktemp("rolling")
    guests = module_lab_factory(2)
    proc, summary = handover(guests, tmp_path, kho_serial=1)
    return guests, proc, summary, tmp_path / "report.html"


def test_rolling_handover_of_two_guests(rolling):
    guests, proc, summary, _report = rolling
    assert proc.returncode == 0, proc.stdout[-6000:]
    for g in guests["guests"]:
        r = summary[g["name"]]
        assert r["verdict"] == "verified", r
        assert r["kexec_count"] == 1 and r["previous_release"] == r["release_before"]
        assert [x["start_before"] for x in r["regions"]] == [x["start_after"] for x in r["regions"]]
        assert r["downtime"] > 0 and r["boot_id_after"] != r["boot_id_before"]
    assert proc.stdout.count("PLAY [Hand hosts over") == 2  # serial: 1, two batches


def test_report_renders_in_chromium(rolling, tmp_path):
    guests, _proc, summary, report = rolling
    chromium = shutil.which("chromium")
    if not chromium:
        pytest.skip("Debian's chromium is not installed (tests/lab/lab.py setup-host installs it)")
    flags = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
             "--disable-background-networking", "--disable-component-update", "--disable-sync",
             f"--user-data-dir={tmp_path / 'profile'}"]
    dom = subprocess.run([chromium, *flags, "--dump-dom", report.as_uri()], capture_output=True, text=True,
                         timeout=120, check=True).stdout
    subprocess.run([chromium, *flags, f"--screenshot={tmp_path / 'report.png'}", "--window-size=1200,700",
                    report.as_uri()], capture_output=True, timeout=120, check=True)
    assert (tmp_path / "report.png").stat().st_size > 10_000
    assert "2 of 2 hosts verified" in dom
    for g in guests["guests"]:
        section = dom.split(f'id="host-{g["name"]}"')[1].split("</section>")[0]
        assert "verified" in section
        for phase in ("preflight", "load", "to_gone", "gone_to_banner", "banner_to_answer", "verify"):
            assert f'class="bar {phase}"' in section and f"{phase.replace('_', ' ')} " in section
        assert f"downtime {summary[g['name']]['downtime']:.1f} s" in section

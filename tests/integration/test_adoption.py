"""A stranger adopts the collection: the README's quick start, followed into a fresh virtualenv with the built
tarball, hands the lab guest over; then the same playbook through ansible-runner, the engine AWX and Automation
Controller run jobs with, keeps the handover summary as the job's artifact."""

from __future__ import annotations

import json
import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest
from test_targets import COLLECTION

README = COLLECTION / "README.md"
LAB_KERNEL = "/boot/vmlinuz-kho"


def readme_block(after: str, lang: str) -> str:
    """The first fenced block of language ``lang`` after the heading ``after``."""
    text = README.read_text()
    start = text.index(after)
    m = re.compile(rf"```{lang}\n(.*?)```", re.S).search(text, start)
    return m.group(1)


def readme_handover_command() -> list:
    """Step 3 of the README's quick start, as an argv with its environment assignments first."""
    block = readme_block("## Quick start", "sh").replace("\\\n", " ")
    line = next(x for x in block.splitlines() if "kexec.kho.handover" in x)
    return shlex.split(line)


def fresh_venv(tmp_path: Path) -> dict:
    """A new virtualenv with the README's install: ansible-core, the collection's requirements.txt, the tarball."""
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    pins = [x for x in (COLLECTION / "tests" / "requirements.txt").read_text().splitlines() if x.startswith("ansible-core==")]
    pip = [str(venv / "bin" / "pip"), "install", "-q", "--disable-pip-version-check"]
    subprocess.run([*pip, *pins, "-r", str(COLLECTION / "requirements.txt")], check=True)
    env = {"PATH": f"{venv / 'bin'}:{os.environ['PATH']}", "HOME": os.environ.get("HOME", "/root"),
           "ANSIBLE_COLLECTIONS_PATH": str(tmp_path / "collections"), "ANSIBLE_HOST_KEY_CHECKING": "False",
           "ANSIBLE_NOCOLOR": "1", "ANSIBLE_LOCAL_TEMP": str(tmp_path / "tmp")}
    build = subprocess.run(["ansible-galaxy", "collection", "build", "--output-path", str(tmp_path), str(COLLECTION)],
                           capture_output=True, text=True, env=env, check=False)
    assert build.returncode == 0, build.stdout + build.stderr
    tarball = next(tmp_path.glob("kexec-kho-*.tar.gz"))
    install = subprocess.run(["ansible-galaxy", "collection", "install", "-p", str(tmp_path / "collections"), str(tarball)],
                             capture_output=True, text=True, env=env, check=False)
    assert install.returncode == 0, install.stdout + install.stderr
    return env


def test_the_readme_quick_start_then_ansible_runner_hand_the_guest_over(lab_factory, tmp_path):
    guests = lab_factory()
    name = guests["guests"][0]["name"]
    env = fresh_venv(tmp_path)
    argv = readme_handover_command()
    assigned = dict(a.split("=", 1) for a in argv if re.match(r"^[A-Z_]+=", a))
    argv = [a for a in argv if not re.match(r"^[A-Z_]+=", a)]
    # The README's values, for this lab: its inventory, its group, its kernel (everything built in: no initrd).
    argv = [guests["inventory"] if a == "inventory.ini" else "kho_targets=kho_lab" if a == "kho_targets=kho"
            else f"kho_handover_kernel={LAB_KERNEL}" if a.startswith("kho_handover_kernel=")
            else "kho_handover_initrd=none" if a.startswith("kho_handover_initrd=") else a for a in argv]
    assert argv[:2] == ["ansible-playbook", "-i"] and "kexec.kho.handover" in argv, argv
    proc = subprocess.run(argv, capture_output=True, text=True, cwd=tmp_path, check=False,
                          env={**env, **assigned, "KHO_REPORT_JSON": str(tmp_path / "report.json")})
    assert proc.returncode == 0, proc.stdout[-5000:] + proc.stderr[-2000:]
    assert (tmp_path / assigned["KHO_REPORT_HTML"]).exists()  # the README's report, where it said
    assert json.loads((tmp_path / "report.json").read_text())[name]["verdict"] == "verified"
    assert f"{name}: verified;" in proc.stdout  # the playbook's own summary line

    runner = pytest.importorskip("ansible_runner")
    job = tmp_path / "job"
    (job / "project").mkdir(parents=True)
    # What an AWX project holds to offer the collection's playbook in a job template: a one-line wrapper.
    (job / "project" / "kho_handover.yml").write_text("- ansible.builtin.import_playbook: kexec.kho.handover\n")
    artifacts_report = job / "artifacts" / "kho-report.json"
    r = runner.run(private_data_dir=str(job), playbook="kho_handover.yml", inventory=guests["inventory"], quiet=True,
                   extravars={"kho_targets": "kho_lab", "kho_handover_kernel": LAB_KERNEL},
                   envvars={"ANSIBLE_COLLECTIONS_PATH": env["ANSIBLE_COLLECTIONS_PATH"], "ANSIBLE_HOST_KEY_CHECKING": "False",
                            "ANSIBLE_CALLBACKS_ENABLED": "kexec.kho.kho_report", "KHO_REPORT_JSON": str(artifacts_report)})
    assert r.status == "successful", r.stdout.read()[-5000:]
    stats = next(e for e in r.events if e.get("event") == "playbook_on_stats")
    summary = stats["event_data"]["artifact_data"]["kho_handover"][name]
    assert summary["verdict"] == "verified" and summary["kexec_count"] == 2, summary  # the second jump of this guest
    assert isinstance(summary["downtime"], float) and summary["failed_step"] is None
    assert json.loads(artifacts_report.read_text())[name]["kexec_count"] == 2  # the report where the job said

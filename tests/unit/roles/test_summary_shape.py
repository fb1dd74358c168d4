"""The role's summary (roles/handover/tasks/summary.yml, run for real by ansible-playbook) has one data shape on every
ansible-core: the units run on each leg of make test (2.16, 2.19, 2.21), each against these same expectations."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[3]
PLAY = """
- hosts: all
  gather_facts: false
  tasks:
    - name: The facts a handover leaves, as the role's earlier tasks set them
      ansible.builtin.set_fact:
        _kho_handover_verdict: verified
        _kho_handover_times: {start: "100.0", load: "109.5", verify: "140.0", end: "141.25"}
        _kho_handover_before: {release: 7.3.4, boot_id: "11111111-2222-3333-4444-555555555555", enabled: true,
                               interface: live, out: {reserve_mem: [{name: oops, start: 1051721728, size: 1048576}]}}
        _kho_handover_after: {release: 7.3.4, in: {kexec_metadata: {kexec_count: 1, previous_release: 7.3.4}}}
        _kho_handover_jump: {boot_id_after: "aaaaaaaa-bbbb-cccc-dddd-eeeeeeeeeeee", downtime: 25.48, method: kexec,
                             detection: connection, detect_latency: 1.28, elapsed: 30.5,
                             phases: {load: 6.0, to_answer: 24.0, banner_to_answer: null},
                             load: {kernel: /boot/vmlinuz, method: kexec, target: {status: compatible,
                                                                                   target_release: 7.3.4}}}
        _kho_handover_check: {regions: [{name: oops, size: 1048576, start_before: 1051721728, start_after: 1051721728,
                                         revived: true, ramoops: null}], liveupdate: null}
    - name: The role's summary
      ansible.builtin.include_role:
        name: kexec.kho.handover
        tasks_from: summary.yml
    - name: Write it out
      ansible.builtin.copy:
        content: "{{ kho_handover_result | to_json }}"
        dest: "{{ out }}"
        mode: "0600"
"""


def test_the_summary_has_one_shape_on_this_core(tmp_path):
    if ROOT.parents[1].name != "ansible_collections":
        pytest.skip("runs from an ansible_collections/kexec/kho layout (tests/utils/layout.sh)")
    (tmp_path / "play.yml").write_text(PLAY)
    (tmp_path / "inventory").write_text(f"web-1 ansible_connection=local ansible_python_interpreter={sys.executable}\n")
    env = {**os.environ, "ANSIBLE_COLLECTIONS_PATH": str(ROOT.parents[2]), "ANSIBLE_LOCAL_TEMP": str(tmp_path / "tmp"),
           "ANSIBLE_NOCOLOR": "1"}
    proc = subprocess.run([str(Path(sys.executable).parent / "ansible-playbook"), "-i", str(tmp_path / "inventory"),
                           "-e", f"out={tmp_path / 'r.json'}", str(tmp_path / "play.yml")],
                          capture_output=True, text=True, env=env, timeout=300, check=False)
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-2000:]
    r = json.loads((tmp_path / "r.json").read_text())
    assert r["verdict"] == "verified" and r["failed_step"] is None and r["error"] is None
    assert r["downtime"] == 25.48 and r["detect_latency"] == 1.28 and r["kexec_count"] == 1
    assert r["previous_release"] == "7.3.4" and r["target_release"] == "7.3.4" and r["target_support"] == "compatible"
    assert r["timings"]["preflight"] == 9.5 and r["timings"]["verify"] == 1.25 and r["timings"]["total"] == 41.25
    assert r["timings"]["load"] == 6.0 and r["timings"]["to_answer"] == 24.0
    assert r["timings"]["to_gone"] is None and r["timings"]["gone_to_banner"] is None
    assert r["timings"]["banner_to_answer"] is None and r["liveupdate"] is None and r["plan"] is None
    assert r["regions"] == [{"name": "oops", "size": 1048576, "start_before": 1051721728, "start_after": 1051721728,
                             "revived": True, "ramoops": None}]

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


def summary(tmp_path, extra: dict | None = None) -> dict:
    """The role's summary of PLAY's facts (``extra``: extra vars over them)."""
    if ROOT.parents[1].name != "ansible_collections":
        pytest.skip("runs from an ansible_collections/kexec/kho layout (tests/utils/layout.sh)")
    (tmp_path / "play.yml").write_text(PLAY)
    (tmp_path / "inventory").write_text(f"web-1 ansible_connection=local ansible_python_interpreter={sys.executable}\n")
    env = {**os.environ, "ANSIBLE_COLLECTIONS_PATH": str(ROOT.parents[2]), "ANSIBLE_LOCAL_TEMP": str(tmp_path / "tmp"),
           "ANSIBLE_NOCOLOR": "1"}
    proc = subprocess.run([str(Path(sys.executable).parent / "ansible-playbook"), "-i", str(tmp_path / "inventory"),
                           "-e", f"out={tmp_path / 'r.json'}", "-e", json.dumps(extra or {}), str(tmp_path / "play.yml")],
                          capture_output=True, text=True, env=env, timeout=300, check=False)
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-2000:]
    return json.loads((tmp_path / "r.json").read_text())


def test_the_summary_has_one_shape_on_this_core(tmp_path):
    r = summary(tmp_path)
    assert r["verdict"] == "verified" and r["failed_step"] is None and r["error"] is None
    assert r["downtime"] == 25.48 and r["detect_latency"] == 1.28 and r["kexec_count"] == 1
    assert r["previous_release"] == "7.3.4" and r["target_release"] == "7.3.4" and r["target_support"] == "compatible"
    assert r["timings"]["preflight"] == 9.5 and r["timings"]["verify"] == 1.25 and r["timings"]["total"] == 41.25
    assert r["timings"]["load"] == 6.0 and r["timings"]["to_answer"] == 24.0
    assert r["timings"]["to_gone"] is None and r["timings"]["gone_to_banner"] is None
    assert r["timings"]["banner_to_answer"] is None and r["liveupdate"] is None and r["plan"] is None
    assert r["regions"] == [{"name": "oops", "size": 1048576, "start_before": 1051721728, "start_after": 1051721728,
                             "revived": True, "ramoops": None}]


HOME = "99999999-8888-7777-6666-555555555555"


@pytest.mark.parametrize("back", [{"boot_id_after": HOME}, None])
def test_a_host_the_way_back_took_home_is_summarised_where_it_is(tmp_path, back):
    """#36: after a return, release_after and boot_id_after are the old kernel's again (the failed one is named in
    way_back); a host that returned by itself (no back: its jump's arrival was the home boot) likewise."""
    ret = {"verdict": "returned to 7.3.4: the new kernel 7.2.13 failed at test_command", "returned": True,
           "failed_release": "7.2.13", "returned_to": "7.3.4", **({"back": back} if back else {"by_host": True})}
    r = summary(tmp_path, {"_kho_handover_return": ret, "_kho_handover_verdict": ret["verdict"]})
    assert r["release_after"] == "7.3.4" and r["way_back"]["failed_release"] == "7.2.13", r
    assert r["boot_id_after"] == (HOME if back else "aaaaaaaa-bbbb-cccc-dddd-eeeeeeeeeeee")
    stayed = summary(tmp_path, {"_kho_handover_return": {**ret, "returned": False, "returned_to": None}})
    assert stayed["boot_id_after"] == "aaaaaaaa-bbbb-cccc-dddd-eeeeeeeeeeee"

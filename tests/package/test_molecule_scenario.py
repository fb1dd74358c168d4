"""The molecule scenario for a user's own hosts ships in the tarball and is sound; nothing here starts a machine."""

from __future__ import annotations

import json
import sys

import pytest
import yaml
from conftest import BIN, ROOT, run

SCENARIO = "extensions/molecule/own_hosts"
FILES = ("molecule.yml", "converge.yml", "verify.yml", "README.md")


@pytest.fixture
def installed_scenario(shipped):
    dest, _tarball, _names = shipped
    return dest, dest / "ansible_collections" / "kexec" / "kho" / SCENARIO


def _inventory(tmp_path, **host_vars):
    inventory = tmp_path / "inventory.yml"
    host = {"ansible_connection": "local", "ansible_python_interpreter": sys.executable, **host_vars}
    inventory.write_text(yaml.safe_dump({"kho_molecule": {"hosts": {"kho-test": host}}}))
    return inventory


def test_tarball_ships_own_hosts_and_leaves_the_lab_scenario_out(shipped):
    _dest, _tarball, names = shipped
    for name in FILES:
        assert f"{SCENARIO}/{name}" in names
    # the lab's scenario calls tests/lab/lab.py, which is not shipped either
    assert not any(n.startswith("extensions/molecule/default") for n in names)
    assert not any(n.startswith("tests/lab") for n in names)


def test_scenario_is_delegated_to_the_users_inventory():
    config = yaml.safe_load((ROOT / SCENARIO / "molecule.yml").read_text())
    assert config["driver"] == {"name": "default", "options": {"managed": False}}
    assert "--inventory=${KHO_MOLECULE_INVENTORY:-KHO_MOLECULE_INVENTORY-is-not-set}" in \
        config["ansible"]["executor"]["args"]["ansible_playbook"]
    # a user's hosts are neither created nor destroyed, and a second converge would be a second jump
    assert config["scenario"]["test_sequence"] == ["syntax", "converge", "verify"]
    assert config["scenario"]["converge_sequence"] == ["converge"]
    converge = yaml.safe_load((ROOT / SCENARIO / "converge.yml").read_text())
    roles = [t for p in converge for t in p.get("tasks", []) for t in t.get("block", [t])
             if "ansible.builtin.import_role" in t]
    assert [t["ansible.builtin.import_role"]["name"] for t in roles] == ["kexec.kho.handover"]
    assert {p["hosts"] for p in converge} == {"localhost", "kho_molecule"}


def test_converge_and_verify_pass_a_syntax_check(installed_scenario, tmp_path):
    dest, scenario = installed_scenario
    inventory = _inventory(tmp_path)
    for playbook in ("converge.yml", "verify.yml"):
        run([str(BIN / "ansible-playbook"), "--syntax-check", "-i", str(inventory), str(scenario / playbook)],
            env={"ANSIBLE_COLLECTIONS_PATH": str(dest)})


@pytest.mark.skipif(not (BIN / "molecule").exists(), reason="molecule is not in this venv")
def test_molecule_syntax_from_the_installed_collection(installed_scenario, tmp_path):
    dest, scenario = installed_scenario
    proc = run([str(BIN / "molecule"), "syntax", "-s", "own_hosts"], cwd=scenario.parents[1], check=False,
               env={"ANSIBLE_COLLECTIONS_PATH": str(dest), "KHO_MOLECULE_INVENTORY": str(_inventory(tmp_path)),
                    "MOLECULE_EPHEMERAL_DIRECTORY": str(tmp_path / "ephemeral")})
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, out[-4000:]
    assert "own_hosts" in out and "successful=1" in out


@pytest.mark.skipif(not (BIN / "molecule").exists(), reason="molecule is not in this venv")
def test_converge_without_an_inventory_touches_nothing(installed_scenario, tmp_path):
    dest, scenario = installed_scenario
    proc = run([str(BIN / "molecule"), "converge", "-s", "own_hosts"], cwd=scenario.parents[1], check=False,
               env={"ANSIBLE_COLLECTIONS_PATH": str(dest), "MOLECULE_EPHEMERAL_DIRECTORY": str(tmp_path / "ephemeral")})
    out = " ".join((proc.stdout + proc.stderr).split())
    assert proc.returncode != 0
    assert "no host in the group kho_molecule: set KHO_MOLECULE_INVENTORY" in out, out[-4000:]
    assert "kexec.kho.handover" not in out and "Preflight" not in out


def _verify(installed_scenario, tmp_path, result):
    """verify.yml against a saved kho_handover_result, as converge leaves it in molecule's ephemeral directory."""
    dest, scenario = installed_scenario
    ephemeral = tmp_path / "ephemeral"
    ephemeral.mkdir()
    (ephemeral / "kho_handover_result.kho-test.json").write_text(json.dumps(result))
    proc = run([str(BIN / "ansible-playbook"), "-i", str(_inventory(tmp_path)), str(scenario / "verify.yml")],
               check=False, env={"ANSIBLE_COLLECTIONS_PATH": str(dest), "MOLECULE_EPHEMERAL_DIRECTORY": str(ephemeral),
                                 "ANSIBLE_BECOME_METHOD": "sudo", "ANSIBLE_LOCAL_TEMP": str(tmp_path / "tmp")})
    return proc.returncode, proc.stdout + proc.stderr


REGION = {"name": "oops", "size": 1048576, "start_before": 4294967296, "start_after": 4294967296, "revived": True,
          "ramoops": None}
RESULT = {"host": "kho-test", "verdict": "verified", "failed_step": None, "error": None, "regions": [REGION],
          "boot_id_before": "4b1f3b0e-6c1d-4c47-9d4c-0d3c1c0e2a10", "boot_id_after": "4b1f3b0e-6c1d-4c47-9d4c-0d3c1c0e2a11"}


def test_verify_fails_on_a_verdict_other_than_verified(installed_scenario, tmp_path):
    rc, out = _verify(installed_scenario, tmp_path, dict(RESULT, verdict="failed, rolled back", failed_step="Load",
                                                         error="kexec_load failed"))
    assert rc != 0
    assert "verdict failed, rolled back, failed step Load: kexec_load failed" in out


def test_verify_fails_on_a_region_that_moved(installed_scenario, tmp_path):
    rc, out = _verify(installed_scenario, tmp_path, dict(RESULT, regions=[dict(REGION, start_after=8589934592)]))
    assert rc != 0
    assert "region oops: sent at 4294967296, back at 8589934592, taken up: True" in out


def test_verify_fails_on_no_region(installed_scenario, tmp_path):
    rc, out = _verify(installed_scenario, tmp_path, dict(RESULT, regions=[]))
    assert rc != 0
    assert "0 reserve_mem regions handed over, 1 expected" in out


def test_verify_reads_the_host_after_a_good_result(installed_scenario, tmp_path):
    # the verdict and regions pass; then the host itself is read, and this machine did not just hand over
    rc, out = _verify(installed_scenario, tmp_path, RESULT)
    assert "TASK [Read the host's KHO state now]" in out, out[-4000:]
    assert rc != 0


def test_molecule_is_documented_for_users():
    readme = (ROOT / SCENARIO / "README.md").read_text()
    for needle in ("KHO_MOLECULE_INVENTORY", "kho_molecule", "kho_handover_kernel", "kho_molecule_verdicts",
                   "kho_molecule_min_regions", "molecule test -s own_hosts"):
        assert needle in readme
    assert "own_hosts" in (ROOT / "docs" / "molecule.md").read_text()


def test_no_leftover_molecule_state_in_the_scenario(installed_scenario):
    _dest, scenario = installed_scenario
    assert sorted(p.name for p in scenario.iterdir()) == sorted(FILES)

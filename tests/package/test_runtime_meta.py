"""meta/: the action group module_defaults targets, the execution environment metadata, the supported cores."""

from __future__ import annotations

import ast
import json
import sys

import yaml
from conftest import BIN, ROOT, run

import simtree

MODULES = sorted(p.stem for p in (ROOT / "plugins" / "modules").glob("kho_*.py"))


def _meta(name):
    return yaml.safe_load((ROOT / "meta" / name).read_text())


def test_action_group_lists_every_module():
    assert _meta("runtime.yml")["action_groups"] == {"kho": MODULES}


def test_module_defaults_for_the_group_reach_a_module(shipped, tmp_path):
    # kho_facts is given no option: only the group's defaults point it at the simulated host, whose boot id
    # and release this machine does not have. Without the group, ansible-core refuses or the real host is read.
    dest, _tarball, _names = shipped
    roots = simtree.build("live-cold", tmp_path / "host")
    playbook = tmp_path / "play.yml"
    playbook.write_text(yaml.safe_dump([{
        "hosts": "localhost", "gather_facts": False,
        "module_defaults": {"group/kexec.kho.kho": roots},
        "tasks": [{"kexec.kho.kho_facts": {"kernel_log": False}, "register": "read"},
                  {"ansible.builtin.copy": {"content": "{{ ansible_facts.kho | to_json }}", "dest": str(tmp_path / "kho.json"),
                                            "mode": "0600"}}],
    }]))
    proc = run([str(BIN / "ansible-playbook"), "-i", "localhost,", "-c", "local", "-e",
                f"ansible_python_interpreter={sys.executable}", str(playbook)], check=False,
               env={"ANSIBLE_COLLECTIONS_PATH": str(dest), "ANSIBLE_LOCAL_TEMP": str(tmp_path / "tmp")})
    assert proc.returncode == 0, (proc.stdout + proc.stderr)[-4000:]
    kho = json.loads((tmp_path / "kho.json").read_text())
    assert kho["boot_id"] == simtree.BOOT_ID
    assert kho["release"] == "7.3.4"
    assert kho["debugfs_root"] == roots["_internal"]["debugfs_root"]


def test_execution_environment_metadata_is_the_collection_schema():
    # a collection's meta/execution-environment.yml names its requirement files in the format ansible-builder reads
    # there (version 1, which it assumes when a collection has none); version 3 is the format of an EE's definition
    ee = _meta("execution-environment.yml")
    assert ee == {"version": 1, "dependencies": {"python": "requirements.txt", "system": "bindep.txt"}}
    for name in ee["dependencies"].values():
        assert (ROOT / name).is_file()


def test_role_supports_the_cores_the_collection_does():
    requires = _meta("runtime.yml")["requires_ansible"]
    role = yaml.safe_load((ROOT / "roles" / "handover" / "meta" / "main.yml").read_text())
    assert requires == ">=" + role["galaxy_info"]["min_ansible_version"] + ".0"


def test_the_test_seams_are_one_internal_option_that_says_so():
    """Issue 40: the simulated trees' roots and the controller's boot id are no user-facing options."""
    sys.path.insert(0, str(ROOT.parents[2]))
    from ansible_collections.kexec.kho.plugins.doc_fragments._host import ModuleDocFragment

    for fragment in (ModuleDocFragment.DOCUMENTATION, ModuleDocFragment.GROUP):
        options = yaml.safe_load(fragment)["options"]
        assert sorted(options) == ["_internal", "mount_debugfs"]
        assert options["_internal"]["description"][0].startswith("Internal, not for playbooks")
    for module in (ROOT / "plugins" / "modules").glob("kho_*.py"):
        doc = next(ast.literal_eval(t.value) for t in ast.parse(module.read_text()).body
                   if isinstance(t, ast.Assign) and getattr(t.targets[0], "id", "") == "DOCUMENTATION")
        documented = yaml.safe_load(doc).get("options", {})
        assert not [o for o in documented if o.endswith("_root") or o == "refuse_boot_id"], module.name

"""The action group is safe to use: every module of group/kexec.kho.kho accepts the options the group sets, as the
README's module_defaults example sets them, and the role's failure path (its rescue) runs under it.  Against a
simulated tree on the controller; no guest."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

import simtree

COLLECTION = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent
GROUP = "group/kexec.kho.kho"
MODULES = yaml.safe_load((COLLECTION / "meta" / "runtime.yml").read_text())["action_groups"]["kho"]
LOCK = Path("/run/kexec-kho/handover.lock")  # the role's lock: its path is no option of the role
NOT_YET: dict = {}  # a module of the group that does not accept the group's options yet, with the reason


def _marked(names):
    return [pytest.param(n, marks=pytest.mark.xfail(reason=NOT_YET[n], strict=True)) if n in NOT_YET else n
            for n in names]


def readme_defaults() -> dict:
    """The group's defaults of the README's module_defaults example."""
    readme = (COLLECTION / "README.md").read_text()
    blocks = [b for b in re.findall(r"```yaml\n(.*?)```", readme, re.S) if GROUP in b]
    assert blocks, "the README has no module_defaults example for the group"
    defaults = yaml.safe_load(blocks[0])[0]["module_defaults"][GROUP]
    assert defaults  # mount_debugfs: true, the option of issue 39
    return defaults


def host_options() -> dict:
    from ansible_collections.kexec.kho.plugins.doc_fragments._host import ModuleDocFragment
    return yaml.safe_load(ModuleDocFragment.DOCUMENTATION)["options"]


def ansible(tmp_path: Path, tool: str, *args: str) -> subprocess.CompletedProcess:
    env = {**{k: v for k, v in os.environ.items() if not k.startswith("ANSIBLE_")},
           "ANSIBLE_COLLECTIONS_PATH": str(COLLECTION.parents[2]), "ANSIBLE_NOCOLOR": "1",
           "ANSIBLE_LOCAL_TEMP": str(tmp_path / "local"), "ANSIBLE_REMOTE_TEMP": str(tmp_path / "remote"),
           "ANSIBLE_RETRY_FILES_ENABLED": "False", "PATH": f"{BIN}:{os.environ['PATH']}"}
    return subprocess.run([str(BIN / tool), *args], capture_output=True, text=True, env=env, cwd=tmp_path,
                          check=False, timeout=300)


def play(tmp_path: Path, tasks: list | None = None, roles: list | None = None) -> subprocess.CompletedProcess:
    """One play on localhost under the README's group defaults, pointed at a simulated live-era host."""
    roots = simtree.build("live-cold", tmp_path / "host")
    playbook = [{"hosts": "localhost", "gather_facts": False,
                 "module_defaults": {GROUP: {**readme_defaults(), **roots}},
                 **({"tasks": tasks} if tasks else {}), **({"roles": roles} if roles else {})}]
    (tmp_path / "play.yml").write_text(yaml.safe_dump(playbook))
    return ansible(tmp_path, "ansible-playbook", "-i", "localhost,", "-c", "local", "-e",
                   f"ansible_python_interpreter={sys.executable}", str(tmp_path / "play.yml"))


@pytest.mark.parametrize("module", _marked(MODULES))
def test_every_module_of_the_group_documents_the_groups_options(tmp_path, module):
    proc = ansible(tmp_path, "ansible-doc", "--json", "-t", "module", f"kexec.kho.{module}")
    assert proc.returncode == 0, proc.stderr[-2000:]
    documented = json.loads(proc.stdout)[f"kexec.kho.{module}"]["doc"]["options"]
    assert [o for o in host_options() if o not in documented] == []
    for name, spec in host_options().items():  # the same option everywhere: its type and default
        assert (documented[name]["type"], documented[name].get("default")) == (spec["type"], spec.get("default")), name


def _tasks(module: str, tmp: Path) -> list:
    """Each module run once under the group's defaults, as the role runs it, changing nothing outside ``tmp``."""
    grub = tmp / "grub"
    grub.write_text('GRUB_CMDLINE_LINUX=""\n')
    return {
        "kho_facts": [{"kexec.kho.kho_facts": {"kernel_log": False}}],
        "kho_finalize": [{"kexec.kho.kho_finalize": {"state": "finalized"}}],
        "kho_kexec": [{"kexec.kho.kho_kexec": {"state": "unloaded", "state_dir": str(tmp / "state")}}],
        "kho_lock": [{"kexec.kho.kho_lock": {"path": str(tmp / "lock" / "handover.lock")}},
                     {"kexec.kho.kho_lock": {"path": str(tmp / "lock" / "handover.lock"), "state": "released"}}],
        "kho_cmdline": [{"kexec.kho.kho_cmdline": {"bootloader": "grub", "grub_file": str(grub), "regenerate": False},
                         "check_mode": True}],
    }[module]


@pytest.mark.parametrize("module", _marked(MODULES))
def test_every_module_of_the_group_runs_under_the_readme_example(tmp_path, module):
    proc = play(tmp_path, _tasks(module, tmp_path))
    assert "Unsupported parameters" not in proc.stdout, proc.stdout[-3000:]
    assert proc.returncode == 0, proc.stdout[-3000:]


def test_the_modules_listed_are_those_the_tasks_cover():
    assert sorted(MODULES) == sorted(p.stem for p in (COLLECTION / "plugins" / "modules").glob("kho_*.py"))


@pytest.fixture
def role_lock():
    """The role takes its lock at /run/kexec-kho (root only); a lock found there is another run's, left alone."""
    if os.geteuid() != 0:
        pytest.skip("the role's lock is under /run/kexec-kho: root only")
    if LOCK.exists():
        pytest.skip(f"{LOCK} exists: another run holds it")
    made = not LOCK.parent.exists()
    yield LOCK
    if LOCK.exists():  # a failed test must not leave a lock behind
        LOCK.unlink()
    if made:
        for leftover in LOCK.parent.iterdir():
            leftover.unlink()
        LOCK.parent.rmdir()


def test_the_roles_failure_and_rescue_run_under_the_readme_example(tmp_path, role_lock):
    # The preflight read takes the lock, then the load is refused (no such image): the rescue releases the lock
    # with kho_lock, which the group's defaults reach too.  Before #39: "Unsupported parameters ... mount_debugfs",
    # the lock left on the host.
    proc = play(tmp_path, roles=[{"role": "kexec.kho.handover",
                                  "vars": {"kho_handover_kernel": str(tmp_path / "no-such-vmlinuz")}}])
    out = proc.stdout
    assert proc.returncode != 0 and "KHO handover failed in phase preflight" in out, out[-4000:]
    assert "Unsupported parameters" not in out, out[-4000:]
    assert re.search(r"TASK \[kexec\.kho\.handover : Release the handover lock this run took\][^\n]*\nchanged: ", out), \
        out[-4000:]
    assert not role_lock.exists()

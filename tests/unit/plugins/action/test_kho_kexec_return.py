"""kho_kexec return=on_failure (#36): a new kernel that failed its check is handed back to the old one by the action
itself, for playbooks without the role.  The action's code runs unchanged against the scripted host of
test_kho_kexec_action (commands, module runs); the verdict's logic is _return's, tested on its own in test_return."""

from __future__ import annotations

import json

import pytest
from test_kho_kexec_action import NEW, OLD, Host, poll, run

from ansible_collections.kexec.kho.plugins.module_utils._kho.kexec import check_values

HOME = "99999999-8888-7777-6666-555555555555"  # the old kernel's boot after the return
WAY = {"possible": True, "kernel": "/boot/vmlinuz-7.3.4", "initrd": "/boot/initrd.img-7.3.4",
       "cmdline": "root=/dev/vda rw kho=on", "release": "7.3.4", "why": "the running kernel 7.3.4 is on disk"}


def raw(release, boot_id, received=True):
    return {"interface": "live", "release": release, "boot_id": boot_id,
            "in": {"present": received, "fdt": None, "sub_blobs": {}}, "out": {"present": True, "fdt": None, "sub_blobs": {}}}


class Returning(Host):
    """Two loads: the upgrade's (on OLD, to 7.2.13) and the return's (on NEW, back to the way back's kernel)."""

    def __init__(self, home_release="7.3.4", lock=None, found=(), **kw):
        load = {"changed": True, "method": "kexec", "triggered": True, "loaded_here": True, "python": "/usr/bin/python3",
                "way_back": WAY, "target": {"target_release": "7.2.13"}}
        super().__init__(polls=[poll(NEW), poll(HOME)], test_rc=1, load=load,
                         facts=json.dumps({"kho_raw": raw(home_release, HOME), "pstore_found": list(found)}) + "\n",
                         **kw)
        self.lock = lock if lock is not None else {"changed": True, "acquired": True}
        self.loads = 0

    def module(self, module_name, module_args, task_vars):
        if module_name == "kexec.kho.kho_facts":
            self.log.append("facts before")
            return {"changed": False, "kho_raw": raw("7.3.4", OLD, received=False)}
        if module_name == "kexec.kho.kho_lock":
            self.log.append(f"lock {module_args['state']}")
            return self.lock if module_args["state"] == "acquired" else {"changed": True}
        if module_args["state"] == "executed":
            self.loads += 1
            self.boot_id = OLD if self.loads == 1 else NEW
        return super().module(module_name, module_args, task_vars)


def test_a_return_whose_canary_is_not_in_the_old_kernels_pstore_is_not_home(monkeypatch):
    host = Returning()
    res = run(host, monkeypatch, test_command="false", pmsg="canary-1", facts_after=True, **{"return": "on_failure"})
    assert res["failed"] and res["jumped"] is True, "a returned host is still a failed run"
    out = res["return"]
    assert res["returned"] is False and out["returned"] is False  # the canary written again was not found
    assert "the canary written again before the return" in out["return"]["failures"][0]


def returned(monkeypatch, **kw):
    host = Returning(found=("canary-1-back",), **kw)
    return host, run(host, monkeypatch, test_command="false", pmsg="canary-1", facts_after=True,
                     **{"return": "on_failure"})


def test_the_return_loads_the_way_back_with_the_target_check_refusing_on_the_new_boot(monkeypatch):
    host, res = returned(monkeypatch)
    assert res["returned"] is True and res["return"]["verdict"] == \
        "returned to 7.3.4: the new kernel 7.2.13 failed at test_command", res["return"]
    assert host.log[:2] == ["facts before", "module executed"]  # the baseline read before anything changes
    assert host.log[2:] == ["poll", "test", "lock acquired", "module executed", "poll", "facts"], host.log
    back = host.module_args[-1]
    assert (back["kernel"], back["initrd"], back["cmdline"]) == (WAY["kernel"], WAY["initrd"], WAY["cmdline"])
    assert back["target_check"] == "refuse" and back["expect_boot_id"] == NEW and back["pmsg"] == "canary-1-back"
    assert back["method"] == "kexec" and "return" not in back and "test_command" not in back
    assert res["return"]["back"]["boot_id_after"] == HOME and res["boot_id_after"] == NEW  # the failed kernel's
    assert res["ansible_facts"]["kho"]["boot_id"] == HOME  # facts_after: the host as it is now, the old kernel
    assert res["msg"].startswith("returned to 7.3.4: the new kernel 7.2.13 failed at test_command: ")


def test_a_return_that_lands_on_another_release_is_not_home(monkeypatch):
    _host, res = returned(monkeypatch, home_release="7.2.13")
    assert res["returned"] is False and res["return"]["verdict"] == "failed after the jump and the return"
    assert "not the old kernel 7.3.4" in res["return"]["return"]["failures"][0]


def test_no_lock_on_the_new_boot_no_return(monkeypatch):
    host, res = returned(monkeypatch, lock={"failed": True, "msg": "another handover holds the lock"})
    assert host.loads == 1 and res["returned"] is False
    assert res["return"]["verdict"] == "failed after the jump and the return"
    assert "another handover holds the lock" in res["return"]["back"]["msg"]


def test_never_is_the_default_and_reads_nothing_more(monkeypatch):
    host = Returning()
    res = run(host, monkeypatch, test_command="false")
    assert res["failed"] and res["failed_check"] == "test_command" and "return" not in res and "returned" not in res
    assert host.log == ["module executed", "poll", "test"]


def test_no_way_back_recorded_no_return_and_the_verdict_says_why(monkeypatch):
    host = Returning()
    host.load["way_back"] = {"possible": False, "release": "7.3.4", "why": "no image of 7.3.4 on disk"}
    res = run(host, monkeypatch, test_command="false", **{"return": "on_failure"})
    assert host.loads == 1 and res["return"]["verdict"] == "failed after the jump"
    assert "no image of 7.3.4 on disk" in res["return"]["decision"]


def test_a_passing_handover_is_not_returned(monkeypatch):
    host = Returning()
    host.test_rc = 0
    res = run(host, monkeypatch, test_command="true", **{"return": "on_failure"})
    assert not res.get("failed") and "return" not in res and host.loads == 1


def test_the_old_kernels_facts_not_read_refuses_before_anything_changes(monkeypatch):
    host = Returning()
    monkeypatch.setattr(host, "module", lambda module_name, module_args, task_vars: {"failed": True, "msg": "debugfs is not mounted"})
    res = run(host, monkeypatch, **{"return": "on_failure"})
    assert res["failed"] and res["jumped"] is False and "debugfs is not mounted" in res["msg"]


def test_the_hosts_own_return_is_disarmed_first_and_its_note_decides(monkeypatch):
    host = Returning()
    note = {"state": "returning", "run_id": None, "old_boot_id": OLD, "new_boot_id": NEW, "old_release": "7.3.4",
            "new_release": "7.2.13", "timeout": 60, "rc": 0}
    real = host.module

    def module(module_name, module_args, task_vars):
        if module_args.get("state") == "disarmed":
            host.log.append("module disarmed")
            return {"changed": True, "removed": ["/etc/systemd/system/kexec-kho-return.service"],
                    "note": {**note, "run_id": host.run_id}}
        return real(module_name, module_args, task_vars)
    monkeypatch.setattr(host, "module", module)
    res = run(host, monkeypatch, test_command="false", confirm_timeout=60, **{"return": "on_failure"})
    assert host.loads == 1 and "module disarmed" in host.log and res["return"].get("by_host") is True, res
    assert res["self_return"]["disarmed"] == ["/etc/systemd/system/kexec-kho-return.service"]


@pytest.mark.parametrize("state", ["loaded", "unloaded", "confirmed"])
def test_return_needs_state_executed(state):
    with pytest.raises(ValueError, match="return is 'on_failure'; a return is made only after a jump"):
        check_values({"state": state, "kernel": "/boot/vmlinuz", "return": "on_failure"})
    check_values({"state": state, "kernel": "/boot/vmlinuz", "return": "never"})

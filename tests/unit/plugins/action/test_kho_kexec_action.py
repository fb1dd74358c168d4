"""kho_kexec state=executed, each branch of its outcome, against a scripted host behind a fake connection.

The action's own code runs unchanged; only the remote side (commands, module runs, the SSH banner) is scripted.
"""

from __future__ import annotations

import json
import shlex
import time
from types import SimpleNamespace

import pytest
from ansible.errors import AnsibleConnectionFailure

from ansible_collections.kexec.kho.plugins.action import kho_kexec as action
from ansible_collections.kexec.kho.plugins.plugin_utils import _jump
from ansible_collections.kexec.kho.plugins.module_utils._kho import paths, stage
from ansible_collections.kexec.kho.plugins.module_utils._kho.kexec import check_values

OLD = "11111111-2222-3333-4444-555555555555"
NEW = "aaaaaaaa-bbbb-cccc-dddd-eeeeeeeeeeee"
PID, START = 4242, "777"  # the module's process on the scripted host, as its jump status names it


class Connection:
    transport = "ssh"

    def __init__(self):
        self._shell = SimpleNamespace(tmpdir=None)
        self.options = {"host": "web-1", "port": 22, "timeout": 10}
        self.resets = 0

    def get_option(self, name):
        if name not in self.options:
            raise KeyError(name)
        return self.options[name]

    def set_option(self, name, value):
        self.options[name] = value

    def reset(self):
        self.resets += 1


class Host:
    """The scripted host: replies to the boot id read, the polls, the test command, module runs."""

    def __init__(self, polls=(), boot_id=OLD, test_rc=0, load=None, hang=None, facts="", switch=None):
        self.polls, self.facts, self.switch = list(polls), facts, switch  # switch: what the staged switch's sh says
        self.boot_id, self.test_rc, self.hang = boot_id, test_rc, hang
        self.load = load if load is not None else {
            "changed": True, "method": "kexec", "argv": ["/usr/sbin/kexec", "-s", "-l", "/boot/vmlinuz"],
            "triggered": True, "loaded_here": True}
        self.log, self.module_args = [], []
        self.run_id = None  # the action's, as the module run was given it

    def command(self, cmd, sudoable=True):
        if self.hang and self.hang in cmd:
            time.sleep(30)
        if cmd.startswith(f"cat {paths.BOOT_ID};"):
            self.log.append("poll")
            reply = self.polls.pop(0) if len(self.polls) > 1 else self.polls[0]
            if isinstance(reply, Exception):
                raise reply
            return {"rc": 0, "stdout": reply.replace("{run}", str(self.run_id)), "stderr": ""}
        if cmd.startswith("if [ -r ") and stage.SWITCH_SH in cmd:  # the staged switch (stage.switch_command)
            self.log.append("switch")
            self.run_id = shlex.split(cmd.split("; then ", 1)[1])[3]  # exec /bin/sh SCRIPT JUMP_RUN ...
            return {"rc": 0, "stdout": self.switch or f"{stage.MARK} fallback no-script\n", "stderr": ""}
        if " -I -S -c " in cmd:  # facts_after's read
            self.log.append("facts")
            return {"rc": 0, "stdout": self.facts, "stderr": ""}
        self.log.append("test")
        return {"rc": self.test_rc, "stdout": "", "stderr": "the test failed" if self.test_rc else ""}

    def module(self, module_name, module_args, task_vars):
        self.log.append(f"module {module_args['state']}")
        self.module_args.append(module_args)
        if module_args["state"] != "executed":
            return {"changed": True}
        self.run_id = module_args.get("run_id")
        if isinstance(self.load, Exception):
            raise self.load
        if (module_args.get("_internal") or {}).get("refuse_boot_id") == self.boot_id:  # as the module's check_boot, before any change
            return {"failed": True, "triggered": False, "msg": "the host is the controller itself"}
        return {"boot_id": self.boot_id, **self.load}  # the module returns the boot id it ran on


def run(host: Host, monkeypatch, check_mode=False, banner=False, **args):
    monkeypatch.setattr(_jump, "ssh_banner", lambda *_a: banner)
    monkeypatch.setattr(action, "ATTEMPT_SLACK", 1.0)
    task = SimpleNamespace(args={"state": "executed", "kernel": "/boot/vmlinuz", "poll_interval": 0.05,
                                 "connect_timeout": 1, "kexec_timeout": 10, "not_jumped_after": 5, **args},
                           check_mode=check_mode, async_val=0, action="kexec.kho.kho_kexec")
    plugin = action.ActionModule(task, Connection(), SimpleNamespace(remote_addr="web-1", port=22, connection="ssh"),
                                 None, None, None)
    monkeypatch.setattr(plugin, "_low_level_execute_command", host.command)
    monkeypatch.setattr(plugin, "_execute_module", host.module)
    monkeypatch.setattr(plugin, "_remove_tmp_path", lambda _tmp: None)
    return plugin.run(task_vars={})


def status(state, done="load", run="{run}"):
    """A jump status line of this run (its id is filled in when the poll answers), or of another run's."""
    return f"{run} {PID} {START} {done} {state}"


def poll(boot, state="none", check="in", process=None, done="load"):
    """A poll's answer; ``state`` is this run's status state (or none), the process gone unless told."""
    line = state if state == "none" else status(state, done)
    return f"{boot}\n{line}\n{process or ('unknown' if state == 'none' else 'gone')}\n{check}\n"


def test_back_on_a_new_boot_with_the_handover(monkeypatch):
    host = Host(polls=[poll(OLD, "started"), AnsibleConnectionFailure("reset"), poll(NEW, "none")])
    res = run(host, monkeypatch)
    assert not res.get("failed") and res["jumped"] is True and res["handover_received"] is True
    assert res["boot_id_before"] == OLD and res["boot_id_after"] == NEW and res["old_boot_answers"] == 1
    assert res["detection"] == "connection"  # no banner answered before the jump: every poll a real attempt
    assert host.log == ["module executed", "poll", "poll", "poll"]  # one run reads the boot id, loads, queues
    assert host.module_args[0]["expect_boot_id"] is None  # read there, and never the controller's own:
    assert host.module_args[0]["_internal"]["refuse_boot_id"] == _jump.controller_boot_id()
    assert set(res["phases"]) == {"boot_id", "load", "to_gone", "gone_to_banner", "banner_to_answer", "to_answer",
                                  "test_command"}
    assert res["phases"]["to_gone"] is None and res["phases"]["to_answer"] >= 0  # no banner watched: one span


def test_a_boot_id_read_earlier_saves_the_read(monkeypatch):
    host = Host(polls=[poll(NEW, "none")])
    res = run(host, monkeypatch, expect_boot_id=OLD)
    assert not res.get("failed") and res["boot_id_before"] == OLD and res["phases"]["boot_id"] is None
    assert host.log == ["module executed", "poll"]


def test_a_malformed_expected_boot_id_is_refused_before_the_host_is_touched(monkeypatch):
    host = Host()
    res = run(host, monkeypatch, expect_boot_id="$(reboot)")
    assert res["failed"] and res["jumped"] is False and "'$(reboot)', not a boot id" in res["msg"]
    assert host.log == []


def test_the_banner_probe_is_used_only_when_it_answered_before_the_jump(monkeypatch):
    res = run(Host(polls=[poll(NEW, "none")]), monkeypatch, banner=True, not_jumped_after=1)
    assert res["detection"] == "ssh banner"


def test_back_without_handover_data(monkeypatch):
    res = run(Host(polls=[poll(NEW, "none", "no-in")]), monkeypatch)
    assert res["failed"] and res["jumped"] is True and res["handover_received"] is False
    assert "received no handover data" in res["msg"]


@pytest.mark.parametrize(("load", "state", "why", "undone"), [
    (None, "exit 1", "the jump command returned (exit 1)", "the image this run loaded was unloaded"),
    (AnsibleConnectionFailure("broken pipe"), "running", f"the run on the host (pid {PID}) ended before it queued",
     "the image this run loaded (the load's answer was lost; its jump status on the host says so) was unloaded"),
])
def test_a_jump_that_did_not_happen_is_undone(monkeypatch, load, state, why, undone):
    host = Host(polls=[poll(OLD, state)], load=load)
    res = run(host, monkeypatch, expect_boot_id=OLD)  # the old boot known, whatever became of the load's answer
    assert res["failed"] and res["jumped"] is False and res["boot_id_after"] is None
    assert res["msg"].startswith("the jump did not happen: " + why) and res["msg"].endswith(undone)
    assert host.log[-1] == "module unloaded" and res["unloaded"] is True


def test_an_image_this_run_did_not_load_is_left_loaded(monkeypatch):
    """The same image was loaded already (loaded_here false): a jump that did not happen unloads nothing."""
    load = {"changed": False, "method": "kexec", "triggered": True, "loaded_here": False}
    host = Host(polls=[poll(OLD, "exit 1")], load=load)
    res = run(host, monkeypatch)
    assert res["failed"] and res["jumped"] is False
    assert res["msg"].endswith("the image was loaded before this run and is left as it was")
    assert "module unloaded" not in host.log and res["unloaded"] is False


def test_options_are_used_as_validated(monkeypatch):
    """An integer expect_boot_id is refused by name (not an AttributeError); paths reach the host as given (the module
    expands them there); a debugfs_root the controller could not poll is refused with the reason."""
    res = run(Host(polls=[poll(NEW, "none")]), monkeypatch, expect_boot_id=12345)
    assert res["failed"] and "expect_boot_id is '12345', not a boot id" in res["msg"]
    host = Host(polls=[poll(NEW, "none")])
    run(host, monkeypatch, kernel="~/vmlinuz", state_dir="/run/x")
    assert host.module_args[0]["kernel"] == "~/vmlinuz" and host.module_args[0]["state_dir"] == "/run/x"
    for root in ("~/debug", "$D/debug", "debug"):
        host = Host(polls=[poll(NEW, "none")])
        res = run(host, monkeypatch, _internal={"debugfs_root": root})
        assert res["failed"] and "needs an absolute path on the host" in res["msg"] and host.module_args == []


def test_a_jump_the_host_could_not_queue_is_not_waited_for(monkeypatch):
    host = Host(load={"failed": True, "triggered": False, "msg": "systemd-run could not queue the jump (rc 1): "
                      "Failed; nothing was jumped: the image unloaded"})
    res = run(host, monkeypatch)
    assert res["failed"] and res["jumped"] is False and "could not queue the jump" in res["msg"]
    assert host.log == ["module executed"]  # the module undid its own load: no poll, no second run


def test_a_host_that_never_returns_is_unknown_and_left_alone(monkeypatch):
    host = Host(polls=[AnsibleConnectionFailure("refused")])
    res = run(host, monkeypatch, kexec_timeout=2)
    assert res["failed"] and res["jumped"] is None and res["boot_id_after"] is None and res["changed"]
    assert "did not answer on a new boot id within 2 s" in res["msg"] and "module unloaded" not in host.log


def test_a_hung_poll_is_abandoned_within_one_attempt(monkeypatch):
    """A half-open session: the poll never answers; the task ends within kexec_timeout plus one attempt."""
    started = time.monotonic()
    res = run(Host(polls=[poll(NEW, "none")], hang=f"cat {paths.BOOT_ID};"), monkeypatch, kexec_timeout=1)
    assert res["failed"] and res["jumped"] is None
    assert time.monotonic() - started < 1 + (1 + action.ATTEMPT_SLACK) + 1.5
    assert "a poll: no answer within 2 s" in res["msg"]


def test_the_controller_itself_is_refused_before_anything_changes(monkeypatch):
    host = Host(boot_id=_jump.controller_boot_id() or pytest.skip("no boot id on this controller"))
    res = run(host, monkeypatch)
    assert res["failed"] and res["jumped"] is False and "the controller itself" in res["msg"]
    assert host.log == ["module executed"]  # the module refused it before any change (refuse_boot_id)


@pytest.mark.parametrize(("args", "message"), [
    ({"kexec_timeout": "5m"}, "kexec_timeout"),
    ({"poll_interval": -1}, "poll_interval is -1"),
    ({"verify_handover": "maybe"}, "verify_handover"),
])
def test_bad_options_fail_before_the_host_is_touched(monkeypatch, args, message):
    host = Host()
    res = run(host, monkeypatch, **args)
    assert res["failed"] and res["jumped"] is False and message in res["msg"] and host.log == []


def test_check_mode_loads_in_check_mode_and_never_triggers(monkeypatch):
    host = Host()
    res = run(host, monkeypatch, check_mode=True)
    assert res["changed"] and res["jumped"] is False and host.log == ["module executed"]


def test_a_failed_test_command_fails_after_the_jump(monkeypatch):
    res = run(Host(polls=[poll(NEW, "none")], test_rc=1), monkeypatch, test_command="systemctl is-active web")
    assert res["failed"] and res["jumped"] is True and "the test command failed: the test failed" in res["msg"]
    assert res["changed"] and res["boot_id_after"] == NEW and res["phases"]["test_command"] is not None
    # The fields documented as returned on success only stay out of a failed test's answer.
    assert not {"rebooted", "elapsed", "detect_latency", "attempts", "method"} & set(res), sorted(res)


def test_the_jump_prints_each_state_as_it_happens(monkeypatch):
    lines = []
    monkeypatch.setattr(action.display, "display", lambda msg, *a, **k: lines.append(msg))
    host = Host(polls=[poll(OLD, "started"), AnsibleConnectionFailure("reset"), poll(NEW, "none")])
    res = run(host, monkeypatch)
    assert not res.get("failed")
    states = [line.split("kho_kexec: ", 1)[1].rsplit(" after ", 1)[0] for line in lines if "kho_kexec: " in line]
    assert states == [_jump.EVENT_SENT, _jump.EVENT_GONE, _jump.EVENT_BACK], lines
    assert all(line.endswith(" s") for line in lines)


def test_a_lost_load_answer_learns_the_old_boot_from_its_jump_status(monkeypatch):
    """The load's answer lost (no boot id from it): the boot that has a jump status is the old one; a later boot
    without one is the new boot."""
    host = Host(polls=[poll(OLD, "started"), AnsibleConnectionFailure("reset"), poll(NEW, "none")],
                load=AnsibleConnectionFailure("broken pipe"))
    res = run(host, monkeypatch)
    assert not res.get("failed") and res["jumped"] is True, res
    assert res["boot_id_before"] == OLD and res["boot_id_after"] == NEW and res["old_boot_answers"] == 1


def test_a_lost_load_answer_then_a_boot_without_jump_status_is_unknown_and_left_alone(monkeypatch):
    """Without the old boot id, a first answer from a boot with no jump status may be the new boot or an old one
    whose run never queued the jump: jumped unknown, the task fails, nothing is unloaded."""
    host = Host(polls=[poll(NEW, "none")], load=AnsibleConnectionFailure("broken pipe"))
    res = run(host, monkeypatch)
    assert res["failed"] and res["jumped"] is None and res["changed"] and "boot_id_before" not in res, res
    assert "whether it jumped is unknown" in res["msg"] and "module unloaded" not in host.log


def facts_line(found=()):
    raw = {"interface": "live", "release": "7.3.4", "boot_id": NEW, "in": {"present": True, "fdt": None, "sub_blobs": {}},
           "out": {"present": True, "fdt": None, "sub_blobs": {}}}
    return json.dumps({"kho_raw": raw, "pstore_found": list(found)}) + "\n"


def test_facts_after_are_one_command_after_the_test(monkeypatch):
    host = Host(polls=[poll(OLD, "started"), poll(NEW, "none")], facts=facts_line(["canary-1"]),
                load={"changed": True, "method": "kexec", "triggered": True, "loaded_here": True,
                      "python": "/usr/bin/python3"})
    commands = []
    real = host.command
    monkeypatch.setattr(host, "command", lambda cmd, sudoable=True: commands.append(cmd) or real(cmd, sudoable))
    res = run(host, monkeypatch, facts_after=True, pstore_search=["canary-1", "canary-2"], test_command="true")
    assert not res.get("failed") and res["facts_read"] is True and res["pstore_found"] == ["canary-1"], res
    kho = res["ansible_facts"]["kho"]
    assert kho["release"] == "7.3.4" and kho["in"]["present"] is True and kho["boot_id"] == NEW
    assert host.log == ["module executed", "poll", "poll", "test", "facts"]  # after the test; no module run
    assert commands[-1].startswith("/usr/bin/python3 -I -S -c ") and res["phases"]["facts"] is not None


@pytest.mark.parametrize(("handed_over", "search", "source", "folded"), [
    (["kho-v4", "memblock-v1", "reserve-mem-v1"], None, "evidence", False),  # kernel state only: the shell read
    (["kho-v4", "memblock-v1", "reserve-mem-v1"], None, "evidence", True),  # ... in the first answer of the new boot
    (["kho-v4", "luo-v5", "memfd-v2"], None, "module", False),  # live update rides: user space's part too
    (["kho-v4", "memblock-v1"], ["canary-1"], "module", False),  # the canary's pstore search
])
def test_facts_after_read_the_kernels_evidence_without_python_where_that_is_all(
        monkeypatch, tmp_path, handed_over, search, source, folded):
    import subprocess  # pylint: disable=import-outside-toplevel
    import simtree  # pylint: disable=import-outside-toplevel,import-error
    from ansible_collections.kexec.kho.plugins.plugin_utils import _evidence  # pylint: disable=import-outside-toplevel
    sim = simtree.build("live-handover", tmp_path / "t")["_internal"]
    host = Host(polls=[poll(OLD, "started"), poll(NEW, "none")], facts=facts_line(["canary-1"]),
                load={"changed": True, "method": "kexec", "triggered": True, "loaded_here": True,
                      "python": "/usr/bin/python3", "target": {"handed_over": handed_over}})
    real = host.command

    def evidence():
        out = subprocess.run(["/bin/sh", "-c", _evidence.command(sim)], capture_output=True, text=True, check=True)
        return out.stdout.replace(simtree.BOOT_ID, NEW)

    def command(cmd, sudoable=True):
        if cmd == _evidence.command(host_roots):  # the read of the host's own files: the simulated tree's, here
            host.log.append("evidence")
            return {"rc": 0, "stdout": evidence(), "stderr": ""}
        reply = real(cmd, sudoable)
        if folded and _evidence.command(host_roots) in cmd and reply["stdout"].startswith(NEW):
            reply["stdout"] += f"{_jump.AFTER}\n{evidence()}"  # the poll's command carries it: the new boot's answer
        return reply
    host_roots = dict(action.ROOTS)
    monkeypatch.setattr(host, "command", command)
    res = run(host, monkeypatch, facts_after=True, **({"pstore_search": search} if search else {}))
    assert not res.get("failed") and res["facts_read"] is True and res["facts_source"] == source, res
    assert res["ansible_facts"]["kho"]["boot_id"] == NEW and res["ansible_facts"]["kho"]["in"]["present"] is True
    assert host.log[-1] == ("poll" if folded else "evidence" if source == "evidence" else "facts")


def test_no_facts_are_read_when_the_test_fails(monkeypatch):
    host = Host(polls=[poll(NEW, "none")], test_rc=1, facts=facts_line(),
                load={"triggered": True, "loaded_here": True, "python": "/usr/bin/python3"})
    res = run(host, monkeypatch, facts_after=True, test_command="false")
    assert res["failed"] and res["jumped"] is True and "facts" not in host.log and "facts_read" not in res


@pytest.mark.parametrize(("load", "facts", "read"), [
    ({"triggered": True, "loaded_here": True}, facts_line(), False),  # no interpreter from the load: no read
    ({"triggered": True, "loaded_here": True, "python": "/usr/bin/python3; reboot"}, facts_line(), False),
    ({"triggered": True, "loaded_here": True, "python": "/usr/bin/python3"}, '{"error": "reading KHO state failed"}\n', True),
    ({"triggered": True, "loaded_here": True, "python": "/usr/bin/python3"}, "Traceback (most recent call last)\n", True),
    ({"triggered": True, "loaded_here": True, "python": "/usr/bin/python3"}, AnsibleConnectionFailure("gone"), True),
])
def test_facts_after_not_read_says_so_and_the_jump_still_counts(monkeypatch, load, facts, read):
    host = Host(polls=[poll(NEW, "none")], load=load, facts=facts)
    if isinstance(facts, Exception):
        real = host.command

        def command(cmd, sudoable=True):
            if " -I -S -c " in cmd:
                raise facts
            return real(cmd, sudoable)
        monkeypatch.setattr(host, "command", command)
    res = run(host, monkeypatch, facts_after=True)
    assert not res.get("failed") and res["jumped"] is True and res["facts_read"] is False, res
    assert "ansible_facts" not in res and ("facts" in host.log) is (read and not isinstance(facts, Exception))


def test_an_answer_without_a_boot_id_is_not_the_old_boot(monkeypatch):
    """The load's answer lost: answers that carry no boot id never count as the old boot's (no false rollback)."""
    host = Host(polls=["\n\n\n"], load=AnsibleConnectionFailure("broken pipe"))
    res = run(host, monkeypatch, kexec_timeout=2, not_jumped_after=1)
    assert res["failed"] and res["jumped"] is None and "module unloaded" not in host.log, res


def test_a_procfs_root_the_polls_do_not_read_is_refused(monkeypatch):
    host = Host()
    res = run(host, monkeypatch, _internal={"procfs_root": "/tmp/proc"})
    assert res["failed"] and res["jumped"] is False and "procfs_root is '/tmp/proc'" in res["msg"] and host.log == []


# ---------------------------------------------------------------- #37: a lost answer, the run's own word

def test_a_lost_load_answer_while_the_run_goes_on_is_waited_for_and_the_jump_counts(monkeypatch):
    """#37 item 1: the load's connection cut, the module still starting (no status yet), then running, then queueing:
    the polls wait for it (never 'did not jump', never an unload), and the jump that follows is the verdict."""
    host = Host(polls=[poll(OLD), poll(OLD, "running", process="alive"), poll(OLD, "started", process="alive"),
                       AnsibleConnectionFailure("reset"), poll(NEW)],
                load=AnsibleConnectionFailure("broken pipe"))
    res = run(host, monkeypatch, expect_boot_id=OLD)
    assert not res.get("failed") and res["jumped"] is True and res["boot_id_after"] == NEW, res
    assert "module unloaded" not in host.log and res["load"]["triggered"] is None and res["old_boot_answers"] == 3


def test_a_run_still_running_past_not_jumped_after_is_unknown_never_not_jumped(monkeypatch):
    """The run on the host alive and not queued yet when the wait ends: it may still jump: null, nothing undone."""
    host = Host(polls=[poll(OLD, "running", process="alive")], load=AnsibleConnectionFailure("broken pipe"))
    res = run(host, monkeypatch, expect_boot_id=OLD, not_jumped_after=1, kexec_timeout=2)
    assert res["failed"] and res["jumped"] is None and "module unloaded" not in host.log, res
    assert f"the run on the host (pid {PID}) was still running" in res["msg"]


def test_another_runs_status_is_not_this_runs(monkeypatch):
    """A status left by an earlier run on the same boot ('exit 1' of another run id) says nothing of this one."""
    other = f"{OLD}\n{status('exit 1', run='earlier-run')}\ngone\nin\n"
    host = Host(polls=[other, poll(OLD, "started"), AnsibleConnectionFailure("reset"), poll(NEW)])
    res = run(host, monkeypatch, expect_boot_id=OLD)
    assert not res.get("failed") and res["jumped"] is True, res


def test_a_lost_answer_rolls_back_what_the_runs_status_says_it_left(monkeypatch):
    """#37 item 10d: the answer lost, the run died after finalizing and loading: the status names both; the image
    is unloaded, the finalize is handed on to the rescue (load.finalized_here) and said."""
    host = Host(polls=[poll(OLD, "running", done="finalize,load")], load=AnsibleConnectionFailure("broken pipe"))
    res = run(host, monkeypatch, expect_boot_id=OLD)
    assert res["failed"] and res["jumped"] is False and res["unloaded"] is True, res
    assert res["load"]["finalized_here"] is True and res["load"]["loaded_here"] is True
    assert "the finalize this run made is left in place" in res["msg"] and host.log[-1] == "module unloaded"


def test_a_run_that_never_wrote_its_status_changed_nothing_and_nothing_is_unloaded(monkeypatch):
    """No status of this run for not_jumped_after: it did not jump, and a run that never said who it is changed
    nothing, so nothing is unloaded (an image there is someone else's)."""
    host = Host(polls=[poll(OLD)], load=AnsibleConnectionFailure("broken pipe"))
    res = run(host, monkeypatch, expect_boot_id=OLD, not_jumped_after=1)
    assert res["failed"] and res["jumped"] is False and res["unloaded"] is False, res
    assert "module unloaded" not in host.log and res["load"]["loaded_here"] is False
    assert "never wrote its jump status, so it changed nothing" in res["msg"]


def test_a_module_that_failed_without_saying_is_not_a_lost_answer(monkeypatch):
    """#37 item 4: the module answered a failure without 'triggered' (a crash): it has ended; with no status of this
    run it changed nothing: did not jump at once, and nothing unloaded."""
    host = Host(polls=[poll(OLD)], load={"failed": True, "msg": "MODULE FAILURE", "module_stderr": "Traceback"})
    started = time.monotonic()
    res = run(host, monkeypatch, expect_boot_id=OLD, not_jumped_after=30, kexec_timeout=60)
    assert res["failed"] and res["jumped"] is False and "module unloaded" not in host.log, res
    assert time.monotonic() - started < 10 and "ended without writing its jump status" in res["msg"]


def test_any_error_after_the_trigger_still_says_jumped(monkeypatch):
    """Whatever raises after the trigger (here the decode of the new boot's facts), the result carries jumped."""
    def explode(*_args):
        raise RecursionError("maximum recursion depth exceeded")
    monkeypatch.setattr(action._facts_after, "decode", explode)
    host = Host(polls=[poll(NEW)], facts=facts_line(),
                load={"triggered": True, "loaded_here": True, "python": "/usr/bin/python3"})
    res = run(host, monkeypatch, facts_after=True)
    assert res["failed"] and res["jumped"] is True and "RecursionError" in res["msg"], res


def test_an_error_on_the_way_back_from_the_load_is_a_lost_answer(monkeypatch):
    """Not only a connection failure: any error while the load's answer comes back leaves the jump unknown until
    the host says (here: it jumped)."""
    host = Host(polls=[poll(OLD, "started"), poll(NEW)], load=RuntimeError("the answer did not decode"))
    res = run(host, monkeypatch, expect_boot_id=OLD)
    assert not res.get("failed") and res["jumped"] is True and res["load"]["triggered"] is None, res


def test_a_lost_answer_in_check_mode_jumped_nowhere(monkeypatch):
    host = Host(load=AnsibleConnectionFailure("broken pipe"))
    res = run(host, monkeypatch, check_mode=True)
    assert res["failed"] and res["jumped"] is False and host.log == ["module executed"], res


def test_the_run_id_is_the_actions_own(monkeypatch):
    host = Host(polls=[poll(NEW)])
    run(host, monkeypatch, run_id="a-value-from-the-task")
    assert host.module_args[0]["run_id"] != "a-value-from-the-task" and len(host.module_args[0]["run_id"]) == 32


def test_the_way_back_recorded_before_the_jump_is_in_the_result(monkeypatch):
    """#36: the run on the old boot records the way back (way_back.read) and the result carries it, on success and on
    a failure after the jump alike; where that run's answer was lost there is none to carry."""
    way = {"possible": True, "kernel": "/boot/vmlinuz-7.3.4", "initrd": None, "cmdline": "root=/dev/vda kho=on",
           "release": "7.3.4", "why": "the running kernel 7.3.4 is on disk: /boot/vmlinuz-7.3.4 without an initrd"}
    load = {**Host().load, "way_back": way}
    assert run(Host(polls=[poll(NEW)], load=load), monkeypatch)["way_back"] == way
    failed = run(Host(polls=[poll(NEW)], load=load, test_rc=1), monkeypatch, test_command="false")
    assert failed["failed"] and failed["jumped"] is True and failed["way_back"] == way
    lost = run(Host(polls=[poll(OLD, "started"), poll(NEW)], load=AnsibleConnectionFailure("reset")), monkeypatch,
               expect_boot_id=OLD)
    assert lost["jumped"] is True and "way_back" not in lost


def test_a_rollback_with_confirm_timeout_also_disarms_the_hosts_own_return(monkeypatch):
    """#36: a jump that did not happen leaves nothing of the self-return armed on the old boot."""
    host = Host(polls=[poll(OLD, "exit 1")])
    res = run(host, monkeypatch, expect_boot_id=OLD, confirm_timeout=60)
    assert res["failed"] and res["jumped"] is False and host.log[-2:] == ["module unloaded", "module disarmed"], host.log
    assert host.module_args[0]["confirm_timeout"] == 60  # the module that loads arms it


# return=on_failure (#36): a new kernel that failed its check handed back by the action itself, for playbooks
# without the role; the verdict's logic is _return's (test_return).

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


# The staged switch by one shell command (stage.switch_script): taken where the task asks nothing only the module does.
STAGE_ANSWER = {"kernel": "/boot/vmlinuz", "method": "kexec", "loaded_here": True, "python": "/usr/bin/python3",
                "way_back": {"possible": True, "kernel": "/boot/vmlinuz-old"}, "target": {"handed_over": ["kho-v1"]}}


def _queued():
    return f"{stage.MARK}-ANSWER\n{json.dumps(STAGE_ANSWER)}\n{stage.MARK} queued\n"


def test_a_staged_switch_is_one_shell_command_and_no_module_run(monkeypatch):
    host = Host(polls=[poll(OLD, "started"), poll(NEW, "none")], switch=_queued())
    res = run(host, monkeypatch, expect_boot_id=OLD, staged=True)
    assert not res.get("failed") and res["jumped"] is True and res["boot_id_after"] == NEW, res
    assert host.log == ["switch", "poll", "poll"]  # no module run before the jump
    load = res["load"]
    assert load["reused_staged"] and load["switched_by"] == "shell" and load["python"] == "/usr/bin/python3"
    assert res["way_back"] == STAGE_ANSWER["way_back"]  # read at the stage, on the old boot


def test_a_switch_that_is_not_its_stages_runs_the_module(monkeypatch):
    host = Host(polls=[poll(NEW, "none")], switch=f"{stage.MARK} fallback request\n")
    res = run(host, monkeypatch, expect_boot_id=OLD, staged=True)
    assert not res.get("failed") and res["jumped"] is True
    assert host.log == ["switch", "module executed", "poll"]


def test_a_switch_that_failed_and_unloaded_did_not_jump(monkeypatch):
    host = Host(polls=[poll(NEW, "none")], switch=f"{stage.MARK}-ANSWER\n{{}}\n{stage.MARK} failed queue unloaded\n")
    res = run(host, monkeypatch, expect_boot_id=OLD, staged=True)
    assert res["failed"] and res["jumped"] is False and host.log == ["switch"]
    assert res["load"]["undone"] == ["the image unloaded"] and res["load"]["loaded_here"] is False
    assert "the switch failed (queue)" in res["msg"]


def test_a_switch_whose_answer_says_nothing_of_ours_is_asked_by_the_polls(monkeypatch):
    """Cut off after the take-up, perhaps after the queue: unknown, never 'not triggered'; the polls read the host's
    jump status, which names this run."""
    host = Host(polls=[poll(OLD, "started"), poll(NEW, "none")], switch="KHO-SWITCH-ANSWER\n{\"kern")
    res = run(host, monkeypatch, expect_boot_id=OLD, staged=True)
    assert res["jumped"] is True and host.log == ["switch", "poll", "poll"]


@pytest.mark.parametrize("extra", [{"pmsg": "canary"}, {"confirm_timeout": 60}, {}], ids=["pmsg", "confirm", "no boot id"])
def test_a_switch_that_asks_what_only_the_module_does_runs_the_module(monkeypatch, extra):
    host = Host(polls=[poll(NEW, "none")], switch=_queued())
    args = {"staged": True, **({"expect_boot_id": OLD} if extra else {}), **extra}
    run(host, monkeypatch, **args)
    assert "switch" not in host.log and "module executed" in host.log

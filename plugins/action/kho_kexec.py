# Copyright (c) kexec.kho contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
"""kho_kexec: loaded/unloaded run the module; executed loads, jumps and waits for the new kernel."""

from __future__ import annotations

import time

from ansible.errors import AnsibleActionFail, AnsibleConnectionFailure
from ansible.plugins.action import ActionBase
from ansible.utils.display import Display

from ansible_collections.kexec.kho.plugins.module_utils._kho.kexec import (
    ARGUMENT_SPEC, JUMP_OPTIONS, MUTUALLY_EXCLUSIVE, REQUIRED_IF, check_values,
)
from ansible_collections.kexec.kho.plugins.plugin_utils import _jump
from ansible_collections.kexec.kho.plugins.module_utils._kho import paths

display = Display()

MODULE = "kexec.kho.kho_kexec"
PATH_OPTIONS = tuple(k for k, spec in ARGUMENT_SPEC.items() if spec.get("type") == "path")
ATTEMPT_SLACK = 10.0  # seconds a remote command may take beyond connect_timeout before it is abandoned


class ActionModule(ActionBase):
    TRANSFERS_FILES = False

    def run(self, tmp=None, task_vars=None):
        result = super().run(tmp, task_vars)
        args = dict(self._task.args)
        if args.get("state") != "executed":
            return self._execute_module(module_name=MODULE, module_args=args, task_vars=task_vars)
        if self._connection.transport == "local" or self._play_context.connection == "local":
            return {**result, "failed": True, "msg": "state=executed is refused on a local connection: the jump "
                                                     "would replace the controller's own kernel"}
        try:  # every option, before anything on the host is read or changed
            _validation, valid = self.validate_argument_spec(argument_spec=ARGUMENT_SPEC, required_if=REQUIRED_IF,
                                                             mutually_exclusive=MUTUALLY_EXCLUSIVE)
            check_values(valid)
        except (AnsibleActionFail, ValueError) as exc:
            return {**result, "failed": True, "jumped": False, "msg": f"kho_kexec: {exc}"}
        root = args.get("debugfs_root") or ARGUMENT_SPEC["debugfs_root"]["default"]
        if not isinstance(root, str) or not root.startswith("/") or "$" in root:
            return {**result, "failed": True, "jumped": False,
                    "msg": f"kho_kexec: debugfs_root is {root!r}: state=executed needs an absolute path on the host "
                           "(no ~ or $: the controller polls it after the jump)"}
        opts = {**{k: valid[k] for k in JUMP_OPTIONS}, "debugfs_root": root}
        # The host's part, in one run: load (the method resolved, auto: what keeps the host's live-update state),
        # the pstore message, the queued jump.  The values as validated and typed, but paths as given: the module
        # expands them on the host (a ~ is the host user's home, not the controller's).
        load_args = {k: (args[k] if k in PATH_OPTIONS else valid[k]) for k in args if k not in JUMP_OPTIONS}
        return self._execute(result, load_args, opts, task_vars)

    # ------------------------------------------------------------ steps

    def _shell(self, command: str, limit: float, what: str) -> dict:
        """One remote command with a hard deadline; an abandoned one is a connection failure."""
        try:
            return _jump.bounded(lambda: self._low_level_execute_command(command, sudoable=True), limit, what)
        except _jump.AttemptTimeout as exc:
            self._connection.reset()  # the abandoned session must not be reused
            raise AnsibleConnectionFailure(str(exc)) from exc

    def _read_boot_id(self, limit: float) -> str | None:
        res = self._shell(f"cat {paths.BOOT_ID}", limit, "reading the boot id")
        return None if res["rc"] else _jump.boot_id(res["stdout"])

    def _connection_timeout(self, value=None):
        """Get (and with a value, set) the connection plugin's connect timeout, as the reboot action does."""
        for option in ("connection_timeout", "timeout"):
            try:
                old = self._connection.get_option(option)
            except KeyError:
                continue
            if value is not None:
                self._connection.set_option(option, value)
            return old
        return None

    def _probe(self):
        """An SSH banner check of the address the connection dials, where that is plain SSH; else None.

        Only a hint: it is used when it answers now, while the host is known to be up.  Through an
        ssh_config alias, a ProxyJump or ProxyCommand bastion, or a port set only in ssh_config, it
        does not, and every poll is a real attempt through the connection plugin instead.
        """
        if self._connection.transport not in ("ssh", "ansible.builtin.ssh", "paramiko", "ansible.builtin.paramiko"):
            return None
        host, port = self._play_context.remote_addr, self._play_context.port
        for option in ("host", "remote_addr"):
            try:
                host = self._connection.get_option(option) or host
                break
            except KeyError:
                continue
        try:
            port = self._connection.get_option("port") or port
        except KeyError:
            pass
        try:
            port = int(port or 22)
        except (TypeError, ValueError):
            return None

        def probe():
            return _jump.ssh_banner(host, port, 1.0)
        return probe if probe() else None

    def _execute(self, result, load_args, opts, task_vars):
        started = time.monotonic()
        result["jumped"] = False
        limit = float(opts["connect_timeout"]) + ATTEMPT_SLACK
        phases = {"boot_id": None}
        old_id = _jump.boot_id(load_args.get("expect_boot_id"))
        if load_args.get("expect_boot_id") and not old_id:
            return {**result, "failed": True, "msg": f"expect_boot_id is {load_args['expect_boot_id']!r}, not a boot "
                                                     "id (8-4-4-4-12 lowercase hex digits)"}
        if not old_id:  # the module checks expect_boot_id on the host before it changes anything
            old_id = self._read_boot_id(limit)
            phases["boot_id"] = round(time.monotonic() - started, 2)
        if not old_id:
            return {**result, "failed": True, "msg": "could not read a well-formed boot id before the jump"}
        if old_id == _jump.controller_boot_id():
            return {**result, "failed": True, "msg": f"the host is the controller itself (boot id {old_id}): the jump "
                                                     "would replace the kernel this run executes on"}
        result["boot_id_before"] = old_id
        probe = None if self._task.check_mode else self._probe()  # the same probe must answer while the host is up
        # Clean up any remote temporary directory first: after the jump it belongs to a kernel that is gone.
        self._remove_tmp_path(self._connection._shell.tmpdir)
        self._connection._shell.tmpdir = None
        loading = time.monotonic()
        try:
            load = self._execute_module(module_name=MODULE, module_args={**load_args, "expect_boot_id": old_id},
                                        task_vars=task_vars)
        except AnsibleConnectionFailure as exc:
            # The jump may or may not have been queued: the polls ask the host (its jump status says which).
            display.vvv(f"kho_kexec: connection failed while loading and queueing the jump: {exc}")
            load = {"triggered": None, "msg": str(exc)}
        phases["load"] = round(time.monotonic() - loading, 2)
        result["load"] = load
        if self._task.check_mode and not load.get("failed"):
            return {**result, "changed": True, "msg": "would load and jump to the new kernel"}
        if load.get("triggered") is False:  # refused or failed before the jump was queued, and undone
            return {**result, "failed": True, "msg": f"nothing was jumped: {load.get('msg')}"}
        # Queued, or unknown (the connection broke, the run crashed): the polls ask the host.
        # From the trigger on, every return says what is known of the jump.
        result.update(jumped=None, old_boot_answers=0, boot_id_after=None, handover_received=None, downtime=None,
                      detection="ssh banner" if probe else "connection", phases=phases)
        jumped_at = time.monotonic()
        root = opts["debugfs_root"] if opts["verify_handover"] else None
        deadline = jumped_at + float(opts["kexec_timeout"])
        original_timeout = self._connection_timeout(opts["connect_timeout"])
        try:
            if opts["post_kexec_delay"]:
                time.sleep(float(opts["post_kexec_delay"]))

            def read_new():
                self._connection.reset()  # never poll through the dead kernel's connection
                return self._shell(_jump.arrival_command(root), limit, "a poll")["stdout"]

            progress = self._progress(task_vars, jumped_at)
            progress(_jump.EVENT_SENT, 0.0)
            back = _jump.wait_for_new_boot(read_new, old_id, float(opts["kexec_timeout"]),
                                           float(opts["poll_interval"]), probe,
                                           not_jumped_after=float(opts["not_jumped_after"]), on_event=progress)
            downtime = time.monotonic() - jumped_at
            result.update(jumped=True, old_boot_answers=back["old_answers"], boot_id_after=back["boot_id"],
                          downtime=round(downtime, 2))
            phases.update(_jump.wait_phases(back, probe is not None))
            testing = time.monotonic()
            test = ({"rc": 0} if not opts["test_command"] else
                    self._shell(opts["test_command"], max(deadline - time.monotonic(), limit), "test_command"))
            phases["test_command"] = round(time.monotonic() - testing, 2) if opts["test_command"] else None
        except _jump.NotBack as exc:
            self._connection.reset()  # later tasks must not reuse a connection to the kernel that left
            result.update(old_boot_answers=exc.old_answers, waited=round(time.monotonic() - jumped_at, 2))
            if exc.seen_down or not exc.old_answers:
                return {**result, "failed": True, "changed": True, "msg": str(exc)}
            # Still on its old boot: as if the jump was never asked for.
            undone, unloaded = self._rollback(task_vars, load)
            return {**result, "failed": True, "jumped": False, "unloaded": unloaded, "msg": f"{exc}; {undone}"}
        except AnsibleConnectionFailure as exc:  # test_command: the host is back, the test did not answer
            test = {"rc": -1, "stderr": str(exc)}
        finally:
            if original_timeout is not None:
                self._connection_timeout(original_timeout)
        if test["rc"]:
            return {**result, "failed": True, "changed": True,
                    "msg": f"the host is back on a new boot, but the test command failed: {test.get('stderr')}"}
        result.update(changed=True, rebooted=True, elapsed=round(time.monotonic() - started, 2),
                      detect_latency=(round(back["waited"] - back["first_answer"], 2)
                                      if back["first_answer"] is not None else None),
                      attempts=back["attempts"], method=load.get("method"))  # null where the load's answer was lost
        if root:
            # Answered by the same command that read the new boot id: a shell test, not a kho_facts run.
            why = _jump.handover_failure(back["check"], root)
            result["handover_received"] = why is None
            if why:
                result.update(failed=True, msg=why)
                return result
        result["msg"] = f"back on boot {back['boot_id']} after {downtime:.1f} s"
        return result

    @staticmethod
    def _progress(task_vars, since: float):
        """One line per host per state of the jump, at default verbosity, with the seconds since the trigger."""
        host = (task_vars or {}).get("inventory_hostname", "?")

        def say(state: str, _seconds: float) -> None:
            display.display(f"{host}: kho_kexec: {state} after {time.monotonic() - since:.1f} s")
        return say

    def _rollback(self, task_vars, load: dict) -> tuple:
        """Unload only an image this run loaded, or may have (the load's answer was lost): (what was done, unloaded)."""
        if load.get("loaded_here") is False:
            return "the image was loaded before this run and is left as it was", False
        whose = "this run loaded" if load.get("loaded_here") else "this run may have loaded (the load's answer was lost)"
        res = self._execute_module(module_name=MODULE, module_args={"state": "unloaded"}, task_vars=task_vars)
        if res.get("failed"):
            return f"unloading the image {whose} failed: {res.get('msg')}", False
        if res.get("changed"):
            return f"the image {whose} was unloaded", True
        return "no image was loaded any more", False

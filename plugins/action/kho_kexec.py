# Copyright (c) kexec.kho contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
"""kho_kexec: loaded/unloaded run the module; executed loads, jumps and waits for the new kernel."""

from __future__ import annotations

import time
import traceback
import uuid
from dataclasses import dataclass, field
from typing import Callable

from ansible.errors import AnsibleActionFail, AnsibleConnectionFailure
from ansible.plugins.action import ActionBase
from ansible.utils.display import Display

from ansible_collections.kexec.kho.plugins.module_utils._kho.kexec import (
    ARGUMENT_SPEC, JUMP_OPTIONS, MUTUALLY_EXCLUSIVE, REQUIRED_IF, check_values,
)
from ansible_collections.kexec.kho.plugins.module_utils._kho.host import INTERNAL, ROOTS, internal
from ansible_collections.kexec.kho.plugins.module_utils._kho import paths, stage
from ansible_collections.kexec.kho.plugins.plugin_utils import _evidence, _facts_after, _jump, _owner, _return
from ansible_collections.kexec.kho.plugins.plugin_utils._decode import facts_of

display = Display()

MODULE = "kexec.kho.kho_kexec"
PATH_OPTIONS = tuple(k for k, spec in ARGUMENT_SPEC.items() if spec.get("type") == "path")
RETURN_KEEPS = ("finalize", "accept_loss", "drop_regions", "state_dir", INTERNAL)  # the return loads as the jump did
ATTEMPT_SLACK = 10.0  # seconds a remote command may take beyond connect_timeout before it is abandoned


@dataclass
class Run:
    """One state=executed run, as its phases learn it: each phase reads what the ones before it set."""

    limit: float  # seconds one remote command may take before it is abandoned
    started: float = field(default_factory=time.monotonic)
    id: str = field(default_factory=lambda: uuid.uuid4().hex)  # the run id the host's jump status carries
    phases: dict = field(default_factory=lambda: {"boot_id": None})  # kho_kexec's phases, in seconds
    old_id: str | None = None  # the old boot id: given, else read by the load's run (None: its answer was lost)
    probe: Callable | None = None  # the SSH banner check, where it answered before the jump
    before: dict | None = None  # the old kernel's facts, read before the jump for return=on_failure
    ended: bool = False  # the load's process is known to have ended
    load: dict = field(default_factory=dict)  # the load's answer
    confirm_timeout: int = 0  # the host's own return may be armed (a rollback disarms it)
    back: dict | None = None  # the new boot's arrival (wait_for_new_boot)
    downtime: float | None = None
    test: dict | None = None  # test_command's result ({"rc": 0} where none ran)
    facts: str | None = None  # the new boot's facts as read (facts_after)
    evidence: bool = False  # ... by the shell read of its evidence (_evidence), not by the module's code


class ActionModule(ActionBase):
    TRANSFERS_FILES = False

    def run(self, tmp=None, task_vars=None):
        result = super().run(tmp, task_vars)
        args = dict(self._task.args)
        if args.get("state") in ("loaded", "unloaded", "executed"):  # this run, as the lock names it: what a staged load is for
            # ... and what the task asks to load: a switch that asks what its stage did switches by one shell command
            args["owner"] = {**_owner.this_run(target=(task_vars or {}).get("inventory_hostname")),
                             "request": stage.request_digest(self._task.args)}
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
        roots = {k: v for k, v in internal(args).items() if k in ROOTS}  # as given: the host expands them
        if roots["procfs_root"] != ROOTS["procfs_root"]:  # the polls read the real boot id, as the load must
            return {**result, "failed": True, "jumped": False,
                    "msg": f"kho_kexec: procfs_root is {roots['procfs_root']!r}: state=executed reads the boot id "
                           f"under {ROOTS['procfs_root']} on the host (as its polls do); leave it unset"}
        root = roots["debugfs_root"]
        if not isinstance(root, str) or not root.startswith("/") or "$" in root:
            return {**result, "failed": True, "jumped": False,
                    "msg": f"kho_kexec: debugfs_root is {root!r}: state=executed needs an absolute path on the host "
                           "(no ~ or $: the controller polls it after the jump)"}
        opts = {**{k: valid[k] for k in JUMP_OPTIONS}, "roots": roots, "check_root": root if valid["verify_handover"] else None,
                "confirm_timeout": valid["confirm_timeout"], "drop_regions": valid["drop_regions"],
                "evidence": _evidence.command(roots)}  # the shell read of the new kernel's evidence, built once
        # The host's part, in one run: load (the method resolved, auto: what keeps the host's live-update state),
        # the pstore message, the queued jump.  The values as validated and typed, but paths as given: the module
        # expands them on the host (a ~ is the host user's home, not the controller's).
        load_args = {k: (args[k] if k in PATH_OPTIONS else valid[k]) for k in args if k not in (*JUMP_OPTIONS, INTERNAL)}
        load_args[INTERNAL] = roots
        load_args["owner"] = args["owner"]  # the action's own value (the task's is ignored)
        return self._execute(result, load_args, opts, task_vars)

    # ------------------------------------------------------------ steps

    def _shell(self, command: str, limit: float, what: str) -> dict:
        """One remote command with a hard deadline; an abandoned one is a connection failure."""
        try:
            return _jump.bounded(lambda: self._low_level_execute_command(command, sudoable=True), limit, what)
        except _jump.AttemptTimeout as exc:
            self._connection.reset()  # the abandoned session must not be reused
            raise AnsibleConnectionFailure(str(exc)) from exc

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
        """state=executed in named phases, as ansible.builtin.reboot's: pre-jump, trigger, wait, verdict.

        Each phase returns the task's result when the run ends there, else None; every return from the trigger on
        says what is known of the jump (``jumped``: false, null for unknown, true)."""
        run = Run(limit=float(opts["connect_timeout"]) + ATTEMPT_SLACK)
        result["jumped"] = False
        try:
            done = (self._pre_jump(result, load_args, opts, run, task_vars)
                    or self._trigger(result, load_args, run, task_vars)
                    or self._wait(result, opts, run, task_vars) or self._verdict(result, opts, run))
            return self._way_home(done, load_args, opts, run, task_vars)
        except Exception as exc:  # pylint: disable=broad-except  # whatever raised, the result says what is known
            display.vvv(f"kho_kexec: {traceback.format_exc()}")
            return {**result, "failed": True, "changed": result["jumped"] is not False,
                    "msg": f"kho_kexec failed ({type(exc).__name__}: {exc}); jumped: {result['jumped']}"}

    def _pre_jump(self, result, load_args, opts, run: Run, task_vars):
        """The old boot id where given; else the load's run reads it (and refuses the controller's own).  With
        return=on_failure, the old kernel's facts: the return's receiver checks compare against them."""
        old_id = _jump.boot_id(load_args.get("expect_boot_id"))
        if load_args.get("expect_boot_id") and not old_id:
            return {**result, "failed": True, "msg": f"expect_boot_id is {load_args['expect_boot_id']!r}, not a boot "
                                                     "id (8-4-4-4-12 lowercase hex digits)"}
        if old_id and old_id == _jump.controller_boot_id():
            return {**result, "failed": True, "msg": f"the host is the controller itself (boot id {old_id}): the jump "
                                                     "would replace the kernel this run executes on"}
        run.old_id = old_id
        run.probe = None if self._task.check_mode else self._probe()  # it must answer while the host is up
        if opts["facts_after"]:
            _facts_after.sources()  # read here, before anything changes: after the trigger every return says jumped
        if opts["return"] == _return.ON_FAILURE and not self._task.check_mode:
            run.before = self._facts_now(task_vars)
            if "error" in run.before:
                return {**result, "failed": True, "msg": f"return={_return.ON_FAILURE} needs the old kernel's facts "
                                                         f"before the jump, and they were not read: "
                                                         f"{run.before['error']}"}
        return None

    def _facts_now(self, task_vars) -> dict:
        """kho_facts on the host as it is now, decoded here as its action does; {'error': why} where not read."""
        facts, why = facts_of(self._execute_module(module_name="kexec.kho.kho_facts", module_args={}, task_vars=task_vars))
        return {"error": why} if why else facts

    def _load(self, load_args, run: Run, task_vars) -> dict:
        """The module's run on the host, and whether its process is known to have ended (``run.ended``).

        Whatever breaks the answer (a connection failure, any error on the way back) is 'triggered: null', never
        'not': the polls then ask the host, whose jump status names this run.  A module that answered without saying
        (it crashed) has ended; what it did is in its jump status, if it wrote one."""
        run.ended = False
        state_dir = self._by_shell(load_args, run)
        if state_dir:
            switched = self._switch(state_dir, load_args["owner"], run)
            if switched is not None:
                return switched
        try:  # the host checks its boot id (expected, or not the controller's) before it changes anything
            load = self._execute_module(module_name=MODULE, task_vars=task_vars, module_args={
                **load_args, INTERNAL: {**load_args[INTERNAL], "refuse_boot_id": _jump.controller_boot_id()},
                "expect_boot_id": run.old_id, "run_id": run.id})
        except Exception as exc:  # pylint: disable=broad-except  # the jump may or may not have been queued
            display.vvv(f"kho_kexec: no answer from the run that loads and queues the jump: {exc}")
            return {"triggered": None, "msg": str(exc)}
        if load.get("unreachable") or not isinstance(load.get("triggered", None), (bool, type(None))):
            return {"triggered": None, "msg": str(load.get("msg"))}
        if "triggered" not in load:  # it answered, so it exited: a crash, or a refusal before the module ran
            run.ended = True
            return {**load, "triggered": None}
        return load

    def _by_shell(self, load_args, run: Run) -> str | None:
        """The state directory where the switch may take its stage's load up by one shell command
        (stage.switch_script): staged, on the boot the stage read, and nothing asked that only the module does (a
        pstore message, the host's own return); else None."""
        state_dir = load_args.get("state_dir") or paths.STATE_DIR
        ok = (load_args.get("staged") and not self._task.check_mode and run.old_id
              and load_args.get("pmsg") is None and not load_args.get("confirm_timeout")
              and state_dir.startswith("/") and "$" not in state_dir and stage.request_of(load_args["owner"]))
        return state_dir if ok else None

    def _switch(self, state_dir: str, owner: dict, run: Run) -> dict | None:
        """The staged switch, one command: the stage's answer with the load taken up and the jump queued, or the
        failure it undid; None where it changed nothing (not this run's stage, or not as it was), for the module
        to run instead.  A lost answer is 'triggered: null', as the module's."""
        command = stage.switch_command(state_dir, run.id, run.old_id, owner)
        try:
            out = self._shell(command, run.limit, "the switch")
        except Exception as exc:  # pylint: disable=broad-except  # the jump may or may not have been queued
            display.vvv(f"kho_kexec: no answer from the switch: {exc}")
            return {"triggered": None, "msg": str(exc)}
        said = stage.switch_answer(out.get("stdout"))
        if said["word"] == "fallback":
            display.vvv(f"kho_kexec: the switch changed nothing ({said['why']}): the module runs instead")
            return None
        if said["word"] == "failed":
            unloaded = said["state"] == stage.UNLOADED
            return {"failed": True, "triggered": False, "changed": not unloaded, "loaded_here": not unloaded,
                    "finalized_here": False, "undone": ["the image unloaded"] if unloaded else [],
                    "msg": f"the switch failed ({said['why']}); "
                           + ("the image this run staged is unloaded" if unloaded else "unloading the image failed")}
        if said["word"] == "queued":
            return {**(said["answer"] or {}), "changed": True, "loaded_here": True, "reused_staged": True,
                    "triggered": True, "boot_id": run.old_id, "switched_by": "shell",
                    "msg": "took up the load this run staged; the jump is queued"}
        return {"triggered": None, "msg": f"the switch's answer said nothing of its own: {str(out.get('stdout'))[-200:]!r}"}

    def _trigger(self, result, load_args, run: Run, task_vars):
        """The host's one run: load, canary, queue the jump.  A lost answer is 'triggered: null', never 'not'."""
        # Clean up any remote temporary directory first: after the jump it belongs to a kernel that is gone.
        self._remove_tmp_path(self._connection._shell.tmpdir)
        self._connection._shell.tmpdir = None
        loading = time.monotonic()
        if not self._task.check_mode:
            result["jumped"] = None  # from here the jump may have been queued, whatever raises
        load = self._load(load_args, run, task_vars)
        run.phases["load"] = round(time.monotonic() - loading, 2)
        result["load"] = run.load = load
        if isinstance(load.get("way_back"), dict):  # recorded on the old boot before the jump (way_back.read)
            result["way_back"] = load["way_back"]
        result["run_id"] = run.id
        result["self_return"] = {"armed": load.get("self_return") if isinstance(load.get("self_return"), dict) else None,
                                 "note": None}
        run.old_id = run.old_id or _jump.boot_id(load.get("boot_id"))  # None: the answer was lost
        if run.old_id:
            result["boot_id_before"] = run.old_id
        if self._task.check_mode:  # nothing is written, loaded or queued in check mode, answered or not
            result["jumped"] = False
            if load.get("triggered") is not None and not load.get("failed"):
                return {**result, "changed": True, "msg": "would load and jump to the new kernel"}
            return {**result, "failed": True, "msg": f"nothing was jumped (check mode): {load.get('msg')}"}
        if load.get("triggered") is False:  # refused or failed before the jump was queued, and undone
            result["jumped"] = False
            return {**result, "failed": True, "msg": f"nothing was jumped: {load.get('msg')}"}
        # Queued, or unknown (the connection broke, the run crashed): the polls ask the host.
        result.update(jumped=None, old_boot_answers=0, boot_id_after=None, handover_received=None, downtime=None,
                      detection="ssh banner" if run.probe else "connection", phases=run.phases)
        return None

    def _wait(self, result, opts, run: Run, task_vars):
        """Until the new boot answers (then test_command), or the wait ends: rolled back where it never left."""
        jumped_at = time.monotonic()
        root = opts["check_root"]
        # Where the host's own return may be armed (asked for; its answer may be lost), the wait covers it too.
        limit = float(opts["kexec_timeout"]) + float(opts["confirm_timeout"])
        run.confirm_timeout = opts["confirm_timeout"]  # a rollback disarms too
        deadline = jumped_at + limit
        original_timeout = self._connection_timeout(opts["connect_timeout"])
        try:
            if opts["post_kexec_delay"]:
                time.sleep(float(opts["post_kexec_delay"]))

            # The new kernel's evidence in its first answer, where that is all the checks need and no test_command
            # must pass first; dropped for the polls after one that ran out its time (the read must never make a
            # good jump a timeout: facts_after then reads it in a command of its own).
            fold = [opts["evidence"] if self._fold(opts, run) else None]

            def read_new():
                self._connection.reset()  # never poll through the dead kernel's connection
                try:
                    return self._shell(_jump.arrival_command(root, fold[0], run.old_id), run.limit, "a poll")["stdout"]
                except AnsibleConnectionFailure as exc:
                    if isinstance(exc.__cause__, _jump.AttemptTimeout):
                        fold[0] = None
                    raise

            progress = self._progress(task_vars, jumped_at)
            progress(_jump.EVENT_SENT, 0.0)
            back = _jump.wait_for_new_boot(read_new, run.old_id, limit,
                                           float(opts["poll_interval"]), run.probe,
                                           not_jumped_after=float(opts["not_jumped_after"]), on_event=progress,
                                           run_id=run.id, ended=run.ended)
            run.back, run.downtime = back, time.monotonic() - jumped_at
            home = (back.get("note") or {}).get("run_id") == run.id  # this run's host returned by itself
            if home:
                result["self_return"]["note"] = back["note"]
            result.update(jumped=True, old_boot_answers=back["old_answers"], boot_id_after=back["boot_id"],
                          boot_id_before=back["old_id"], downtime=round(run.downtime, 2))
            run.phases.update(_jump.wait_phases(back, run.probe is not None))
            # test_command is the new kernel's test: on the old kernel, back by itself, only its facts are read
            run.test = {"rc": 0} if home else self._test_command(opts, run, deadline)
            run.facts = self._read_facts(opts, run) if not run.test["rc"] else None
        except _jump.NotBack as exc:
            return self._not_back(result, exc, run, task_vars, jumped_at)
        finally:
            if original_timeout is not None:
                self._connection_timeout(original_timeout)
        return None

    @staticmethod
    def _fold(opts, run: Run) -> bool:
        """Whether the polls carry the evidence read (arrival_command's ``after``)."""
        return bool(opts["facts_after"] and not opts["test_command"] and run.old_id
                    and _evidence.enough(run.load, opts["pstore_search"]))

    def _read_facts(self, opts, run: Run) -> str | None:
        """With facts_after, the new boot's facts, read once it answered and test_command passed (the host settled as
        far as the play asks): one command, no module run.  None where there is nothing to read them with (the load's
        answer, with the interpreter that ran it, was lost) or the read did not answer; then facts_read is false."""
        if not opts["facts_after"]:
            return None
        if (run.back or {}).get("after") is not None:  # read in the first answer of the new boot
            run.evidence, run.phases["facts"] = True, 0.0
            return run.back["after"]
        # Kernel state only (no canary, no live update riding): one shell read, no Python started on a booting host.
        run.evidence = _evidence.enough(run.load, opts["pstore_search"])
        command = opts["evidence"] if run.evidence else _facts_after.read_command(
            run.load.get("python"), {INTERNAL: opts["roots"], "pstore_search": opts["pstore_search"]})
        if not command:
            return None
        reading = time.monotonic()
        try:
            return self._shell(command, run.limit + _facts_after.READ_SECONDS, "reading the new boot's facts")["stdout"]
        except AnsibleConnectionFailure as exc:
            display.warning(f"kho_kexec: reading the new boot's facts failed: {exc}")
            return None
        finally:
            run.phases["facts"] = round(time.monotonic() - reading, 2)

    def _test_command(self, opts, run: Run, deadline) -> dict:
        run.phases["test_command"] = None
        if not opts["test_command"]:
            return {"rc": 0}
        testing = time.monotonic()
        try:
            return self._shell(opts["test_command"], max(deadline - time.monotonic(), run.limit), "test_command")
        except AnsibleConnectionFailure as exc:  # the host is back, the test did not answer
            return {"rc": -1, "stderr": str(exc)}
        finally:
            run.phases["test_command"] = round(time.monotonic() - testing, 2)

    def _not_back(self, result, exc, run: Run, task_vars, jumped_at):
        """No new boot: unknown (it may have jumped) fails as is; a host still on its old boot is rolled back, as far
        as this run changed it (its answer, else its jump status, says how far)."""
        self._connection.reset()  # later tasks must not reuse a connection to the kernel that left
        result.update(old_boot_answers=exc.old_answers, waited=round(time.monotonic() - jumped_at, 2))
        if _jump.after_not_back(exc) is None:
            return {**result, "failed": True, "changed": True, "msg": str(exc)}
        result["jumped"] = False
        left = _jump.left_by_run(run.load, exc.status)
        # The role's rescue reads the load's loaded_here and finalized_here: where the answer was lost, the status's.
        result["load"] = {**run.load, "loaded_here": left["loaded_here"], "finalized_here": left["finalized_here"]}
        whose = _jump.unload_plan(left)
        res = (self._execute_module(module_name=MODULE, module_args={"state": "unloaded"}, task_vars=task_vars)
               if whose else None)
        if run.confirm_timeout:  # the host's own return, armed or maybe armed: nothing of it stays on the old boot
            gone = self._execute_module(module_name=MODULE, module_args={"state": "disarmed"}, task_vars=task_vars)
            result["self_return"] = {**result.get("self_return", {}), "disarmed": gone.get("removed")}
        undone, unloaded = _jump.unload_outcome(whose, res, left["source"])
        finalize = ("; the finalize this run made is left in place (kexec.kho.kho_finalize state=aborted undoes it)"
                    if left["finalized_here"] else "")
        return {**result, "failed": True, "unloaded": unloaded, "msg": f"{exc}; {undone}{finalize}"}

    def _verdict(self, result, opts, run: Run):
        root = opts["check_root"]
        if run.test["rc"]:  # back, but not well: the success fields stay out
            return {**result, "changed": True, **_jump.verdict(run.back, run.downtime, run.test, root)}
        back, load = run.back, run.load
        result.update(changed=True, rebooted=True, elapsed=round(time.monotonic() - run.started, 2),
                      detect_latency=(round(back["waited"] - back["first_answer"], 2)
                                      if back["first_answer"] is not None else None),
                      attempts=back["attempts"], method=load.get("method"))  # null where the load's answer was lost
        return {**result, **_jump.verdict(back, run.downtime, run.test, root), **self._facts(opts, run)}

    # ------------------------------------------------------------ the way back (return=on_failure)

    def _way_home(self, result, load_args, opts, run: Run, task_vars):
        """A new kernel that failed test_command or the handover check, on a host that answers on it, is handed back
        to the way back's kernel by a second handover (docs/way-back.md); the verdict is in ``return``, decided from
        fields (_return), and the run stays failed.  Nothing is done for a run that passed, did not jump, or whose
        host returned by itself."""
        if (opts["return"] != _return.ON_FAILURE or not result.get("failed") or result.get("jumped") is not True
                or not result.get("failed_check") or (result.get("self_return") or {}).get("note")):
            return result
        note = self._disarm_before_return(result, run, task_vars)
        if note:  # the host's own return ran while the controller looked: its note decides
            out = _return.host_outcome({**result, "self_return": {**result["self_return"], "note": note}}, note,
                                       run.before, opts["drop_regions"])
            return {**result, "returned": out["returned"], "return": out, "msg": f"{out['verdict']}: {result['msg']}"}
        state = _return.from_result(result, result["failed_check"], True, opts["return"])
        decision = _return.decide(state)
        canary = f"{load_args['pmsg']}-back" if load_args.get("pmsg") else None
        back = self._return_jump(result, load_args, opts, canary, task_vars) if decision.go else {}
        out = _return.settle(state, decision, result, back, run.before, str(result.get("msg") or ""),
                             opts["drop_regions"], canary)
        home = out["returned"] and isinstance(back.get("ansible_facts"), dict)
        return {**result, **({"ansible_facts": back["ansible_facts"]} if home and opts["facts_after"] else {}),
                "returned": out["returned"], "return": out, "msg": f"{out['verdict']}: {result['msg']}"}

    def _disarm_before_return(self, result, run: Run, task_vars) -> dict | None:
        """Where the host's own return may be armed, it is removed before the controller's (the two never race);
        the note of a return the host began by itself, where the disarm found one."""
        if not run.confirm_timeout:
            return None
        gone = self._execute_module(module_name=MODULE, module_args={"state": "disarmed"}, task_vars=task_vars)
        result["self_return"] = {**result["self_return"], "disarmed": gone.get("removed")}
        return gone.get("note") if isinstance(gone.get("note"), dict) else None

    def _return_jump(self, result, load_args, opts, canary, task_vars) -> dict:
        """The return: under the handover lock on the new boot, the way back's kernel loaded with the same options
        and the target check refusing (the old kernel must read what the new one sends), the jump, and the old
        kernel's facts on arrival.  The lock is released where the host did not jump back."""
        lock = _owner.lock(self._execute_module, task_vars, {"state": "acquired"})
        if not lock.get("acquired"):
            return {"jumped": False, "failed": True, "msg": f"the handover lock on the new boot: {lock.get('msg')}"}
        way = result["way_back"]
        back_args = {**{k: load_args[k] for k in RETURN_KEEPS if k in load_args}, "state": "executed",
                     "kernel": way["kernel"], "initrd": way.get("initrd") or "none", "cmdline": way["cmdline"],
                     "method": (result.get("load") or {}).get("method") or load_args.get("method", "auto"), "target_check": "refuse",
                     "expect_boot_id": result["boot_id_after"], **({"pmsg": canary} if canary else {})}
        back_opts = {**opts, "test_command": None, "facts_after": True, "check_root": opts["roots"]["debugfs_root"],
                     "verify_handover": True, "pstore_search": [canary] if canary else [], "confirm_timeout": 0,
                     "return": _return.NEVER}
        back = self._execute({"changed": False}, back_args, back_opts, task_vars)
        if back.get("jumped") is False:
            _owner.lock(self._execute_module, task_vars, {"state": "released"})
        return back

    @staticmethod
    def _facts(opts, run: Run) -> dict:
        """facts_after's return: the new boot's facts (as kho_facts returns them), where the one read after its first
        answer (and test_command) got them (_read_facts)."""
        if not opts["facts_after"]:
            return {}
        decode = _evidence.facts if run.evidence else _facts_after.decode
        got = decode(run.facts, run.back["boot_id"]) if run.facts else {"error": "nothing was read (see above)"}
        if "error" not in got and got["facts"].get("over_budget"):  # as kho_facts: refused, and read again by it
            got = {"error": f"the controller refused to decode them: {got['facts']['over_budget']}"}
        if "error" in got:
            display.warning(f"kho_kexec: the new boot's facts were not read after the jump: {got['error']}")
            return {"facts_read": False}
        return {"facts_read": True, "facts_source": "evidence" if run.evidence else "module", "ansible_facts": {"kho": got["facts"]},
                "pstore_found": got["pstore_found"]}

    @staticmethod
    def _progress(task_vars, since: float):
        """One line per host per state of the jump, at default verbosity, with the seconds since the trigger."""
        host = (task_vars or {}).get("inventory_hostname", "?")

        def say(state: str, _seconds: float) -> None:
            display.display(f"{host}: kho_kexec: {state} after {time.monotonic() - since:.1f} s")
        return say

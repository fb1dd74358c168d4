# Copyright (c) kexec.kho contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Runs the kho_facts module on the host (taking the handover lock first, with lock), then decodes its blobs here
on the controller."""

from __future__ import annotations

from ansible.module_utils.parsing.convert_bool import boolean
from ansible.plugins.action import ActionBase

from ansible_collections.kexec.kho.plugins.module_utils._kho import paths
from ansible_collections.kexec.kho.plugins.plugin_utils import _owner, _ready
from ansible_collections.kexec.kho.plugins.plugin_utils._decode import facts_of

MODULE = "kexec.kho.kho_facts"


class ActionModule(ActionBase):
    TRANSFERS_FILES = False

    def run(self, tmp=None, task_vars=None):
        result = super().run(tmp, task_vars)
        args = dict(self._task.args)
        try:
            include_raw = boolean(args.get("include_raw", False), strict=True)
        except TypeError as exc:
            return {**result, "failed": True, "msg": f"include_raw: {exc}"}
        result["controller_missing"] = _ready.missing()
        if isinstance(args.get("lock"), dict) and result["controller_missing"]:  # the lock is the first change
            return {**result, "failed": True, "msg": _ready.refusal(result["controller_missing"])}
        if isinstance(args.get("lock"), dict):  # else the module's own validation says what is wrong
            owner = _owner.this_run(target=(task_vars or {}).get("inventory_hostname"))
            taking = {**args["lock"], "owner": owner}

            def execute(break_lock=None):
                lock = {**taking, "break_lock": break_lock} if break_lock else taking
                return self._execute_module(module_name=MODULE, module_args={**args, "lock": lock},
                                            task_vars=task_vars)
            module = _owner.acquire(execute, owner, taking.get("path") or paths.LOCK, lambda res: res.get("lock") or {})
        else:
            module = self._execute_module(module_name=MODULE, module_args=args, task_vars=task_vars)
        result.update(module)
        facts, why = facts_of(result, include_raw)
        if facts is None:
            return result
        result["ansible_facts"] = {"kho": facts}
        if why:  # over the controller's budget: this host fails; the others go on
            result.update(failed=True, msg=f"kho_facts: the controller refused to decode this host's KHO blobs: {why}")
        return result

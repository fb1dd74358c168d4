# Copyright (c) kexec.kho contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
"""kho_lock: names this run as the owner, and takes over a lock whose run has ended on this controller."""

from __future__ import annotations

from ansible.plugins.action import ActionBase

from ansible_collections.kexec.kho.plugins.module_utils._kho import paths
from ansible_collections.kexec.kho.plugins.plugin_utils import _owner

MODULE = "kexec.kho.kho_lock"


class ActionModule(ActionBase):
    TRANSFERS_FILES = False

    def run(self, tmp=None, task_vars=None):
        result = super().run(tmp, task_vars)
        args = {**self._task.args, "owner": _owner.this_run(target=(task_vars or {}).get("inventory_hostname"))}

        def execute(break_lock=None):
            return self._execute_module(module_name=MODULE, task_vars=task_vars,
                                        module_args={**args, **({"break_lock": break_lock} if break_lock else {})})
        if args.get("state", "acquired") != "acquired":
            return {**result, **execute()}
        return {**result, **_owner.acquire(execute, args["owner"], args.get("path") or paths.LOCK)}

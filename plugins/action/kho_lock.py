# Copyright (c) kexec.kho contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
"""kho_lock: names this run as the owner, and takes over a lock whose run has ended on this controller."""

from __future__ import annotations

from ansible.plugins.action import ActionBase

from ansible_collections.kexec.kho.plugins.module_utils._kho.lock import DEFAULT_PATH
from ansible_collections.kexec.kho.plugins.plugin_utils import _owner

MODULE = "kexec.kho.kho_lock"


class ActionModule(ActionBase):
    TRANSFERS_FILES = False

    def run(self, tmp=None, task_vars=None):
        result = super().run(tmp, task_vars)
        args = {**self._task.args, "owner": _owner.this_run(target=(task_vars or {}).get("inventory_hostname"))}
        res = self._execute_module(module_name=MODULE, module_args=args, task_vars=task_vars)
        if args.get("state", "acquired") != "acquired" or res.get("failed") or res.get("acquired"):
            return {**result, **res}
        holder = res["holder"]
        why = _owner.ended(holder) if holder.get("run") != args["owner"]["run"] else None  # ours, another name
        if why:
            res = self._execute_module(module_name=MODULE, module_args={**args, "break_lock": holder["run"]},
                                       task_vars=task_vars)
            if res.get("acquired"):
                return {**result, **res, "msg": f"took over the lock of run {holder['run']}: {why}"}
            holder = res["holder"]  # another run took it over first
        path = args.get("path") or DEFAULT_PATH
        if holder.get("run") == args["owner"]["run"]:
            return {**result, **res, "failed": True,
                    "msg": f"this run already holds {path} on this host for inventory host {holder.get('target')!r}: "
                           "one host reached under two inventory names is handed over under one name at a time"}
        return {**result, **res, "failed": True,
                "msg": f"another handover holds {path} on this host: run {holder['run']}"
                       f" ({holder.get('user', '?')}@{holder.get('controller', '?')} since {holder.get('since', '?')})."
                       f" It goes away with the next boot. If that run is over, take the lock over with"
                       f" break_lock: {holder['run']!r} (kho_handover_break_lock in the role)"}

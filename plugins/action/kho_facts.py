# Copyright (c) kexec.kho contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Runs the kho_facts module on the host, then decodes its blobs here on the controller."""

from __future__ import annotations

from ansible.plugins.action import ActionBase

from ansible_collections.kexec.kho.plugins.plugin_utils._handover import facts_from_raw


class ActionModule(ActionBase):
    TRANSFERS_FILES = False

    def run(self, tmp=None, task_vars=None):
        result = super().run(tmp, task_vars)
        module = self._execute_module(module_name="kexec.kho.kho_facts", module_args=self._task.args,
                                      task_vars=task_vars)
        result.update(module)
        raw = result.pop("kho_raw", None)
        if result.get("failed") or raw is None:
            return result
        facts = facts_from_raw(raw, bool(self._task.args.get("include_raw")))
        result["ansible_facts"] = {"kho": facts}
        return result

# Copyright (c) kexec.kho contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
"""kho_lock: names this run as the owner, and takes over a lock whose run has ended on this controller."""

from __future__ import annotations

from ansible.plugins.action import ActionBase

from ansible_collections.kexec.kho.plugins.plugin_utils import _owner


class ActionModule(ActionBase):
    TRANSFERS_FILES = False

    def run(self, tmp=None, task_vars=None):
        result = super().run(tmp, task_vars)
        return {**result, **_owner.lock(self._execute_module, task_vars, dict(self._task.args))}

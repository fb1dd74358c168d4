# Copyright (c) kexec.kho contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
"""The bench's own record of a run, as JSON (bench/lab_bench.py enables it): no timing is read from the play's text."""

from __future__ import annotations

DOCUMENTATION = r"""
name: kho_bench
type: aggregate
short_description: bench/lab_bench.py's record of one playbook run
description:
  - Writes, at the end of the run, the time the task named C(returned) started (the run's end as the bench counts
    it), the time the play named C(switch) started (a staged run's switch), and the first C(phases) a task
    returned (kexec.kho.kho_kexec's), as JSON to E(KHO_BENCH_RECORD).
  - Not part of the collection; bench/lab_bench.py puts it on E(ANSIBLE_CALLBACK_PLUGINS) for its own runs.
requirements:
  - enabled in callbacks_enabled
"""

import json
import os
import time

from ansible.plugins.callback import CallbackBase


class CallbackModule(CallbackBase):
    CALLBACK_VERSION = 2.0
    CALLBACK_TYPE = "aggregate"
    CALLBACK_NAME = "kho_bench"
    CALLBACK_NEEDS_ENABLED = True

    def __init__(self):
        super().__init__()
        self.record = {"returned": None, "phases": None, "switch": None}

    def v2_playbook_on_play_start(self, play):
        if play.get_name() == "switch" and self.record["switch"] is None:
            self.record["switch"] = time.time()

    def v2_playbook_on_task_start(self, task, is_conditional):
        if task.get_name() == "returned" and self.record["returned"] is None:
            self.record["returned"] = time.time()

    def v2_runner_on_ok(self, result):
        phases = result._result.get("phases")  # pylint: disable=protected-access
        if isinstance(phases, dict) and self.record["phases"] is None:
            self.record["phases"] = phases

    def v2_playbook_on_stats(self, stats):
        path = os.environ.get("KHO_BENCH_RECORD")
        if path:
            with open(path, "w", encoding="utf-8") as fh:
                json.dump(self.record, fh)
